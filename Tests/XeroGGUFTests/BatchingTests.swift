import XCTest
@testable import XeroGGUF

/// Sequences that share forward passes get exactly what they get alone.
final class BatchingTests: XCTestCase {
    func testEightPromptsBatchedEqualOneAtATime() throws {
        let (model, tok, template) = try LlamaTests.load()
        let questions = ["What is the capital of France?", "Name three colors.", "Write a haiku.", "What is 2+2?",
                         "Who wrote Hamlet?", "Describe the sea.", "List two fruits.", "Say hello in Spanish."]
        let prompts = questions.map { tok.encode(segments: template.render([.init(role: "user", content: $0)])) }
        func argmax(_ v: [Float]) -> Int32 { Int32(v.indices.max { v[$0] < v[$1] || (v[$0] == v[$1] && $0 > $1) }!) }
        let steps = 12
        // Alone.
        var alone: [[Int32]] = []
        for p in prompts {
            let cache = model.newCache()
            var t = argmax(model.forward(p, cache: cache))
            var out = [t]
            for _ in 1..<steps { t = argmax(model.forward([t], cache: cache)); out.append(t) }
            alone.append(out)
        }
        // Together: all eight prompts in one pass, then every decode step as one batch — and a
        // newcomer joining mid-way (the last prompt starts after three steps of the others).
        let caches = prompts.map { _ in model.newCache() }
        var together = [[Int32]](repeating: [], count: 8)
        let first = model.forward(Array(zip(prompts.prefix(7), caches.prefix(7))))
        for i in 0..<7 { together[i].append(argmax(first[i])) }
        for step in 1..<(steps + 3) {
            var segs: [([Int32], KVCache)] = []
            var who: [Int] = []
            for i in 0..<7 where together[i].count < steps { segs.append(([together[i].last!], caches[i])); who.append(i) }
            if step == 3 { segs.append((prompts[7], caches[7])); who.append(7) }
            else if step > 3 && together[7].count < steps { segs.append(([together[7].last!], caches[7])); who.append(7) }
            if segs.isEmpty { break }
            for (i, logits) in zip(who, model.forward(segs)) { together[i].append(argmax(logits)) }
        }
        XCTAssertEqual(together, alone)
    }
}
