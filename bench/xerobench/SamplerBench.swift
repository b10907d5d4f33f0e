import Foundation
import XeroGGUF

/// What one draw costs on a real model's logits (issue 19): the logits of a chat prompt's next
/// token, then `draws` draws at temperature 0.7 — without top-p (the SDK benchmark's requests)
/// and with top-p 0.9 (the engine's default when sampling). Prints ms per draw.
///   xerobench sampler MODEL [draws=2000]
enum SamplerBench {
    static func run(path: String, draws: Int) throws {
        let file = try GGUFFile(path: path)
        let model = try LlamaModel(file: file)
        let tokens = try Tokenizers.load(file).encode("<|im_start|>user\nWrite a story about a lighthouse keeper.<|im_end|>\n<|im_start|>assistant\n", parseSpecial: true)
        let logits = model.forward(tokens, cache: model.newCache(reserve: tokens.count + 1))
        for topP: Float in [1, 0.9] {
            var o = SamplingOptions()
            o.temperature = 0.7; o.topP = topP; o.seed = 1
            var sampler = Sampler(options: o)
            var picked = Set<Int32>()
            let t0 = DispatchTime.now().uptimeNanoseconds
            for _ in 0..<draws {
                var l = logits
                picked.insert(sampler.sample(&l).id)
            }
            let ms = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6 / Double(draws)
            print(String(format: #"{"mode":"sampler","temperature":0.7,"top_p":%.1f,"ms_per_draw":%.4f,"distinct_tokens":%d}"#,
                         topP, ms, picked.count))
        }
    }
}
