import Foundation

/// Builds OpenAI's embeddings response from a worker's vectors (count × dim little-endian Float32).
public enum EmbeddingsResponse {
    public static func json(dim: Int, data: [UInt8], count: Int, base64: Bool, model: String, promptTokens: Int) -> [UInt8] {
        var w = JSONWriter(capacity: data.count * 3)
        w.objectStart()
        w.field("object", "list")
        w.key("data"); w.arrayStart()
        for i in 0..<count {
            let slice = Array(data[(i * dim * 4)..<((i + 1) * dim * 4)])
            w.objectStart(); w.field("object", "embedding"); w.field("index", i)
            w.key("embedding")
            if base64 {
                w.value(Data(slice).base64EncodedString())
            } else {
                w.arrayStart()
                for j in 0..<dim { w.value(Double(float32(slice, at: j))) }
                w.arrayEnd()
            }
            w.objectEnd()
        }
        w.arrayEnd()
        w.field("model", model)
        w.key("usage"); w.objectStart(); w.field("prompt_tokens", promptTokens); w.field("total_tokens", promptTokens); w.objectEnd()
        w.objectEnd()
        return w.bytes
    }

    /// The `j`-th little-endian Float32 of `bytes`.
    public static func float32(_ bytes: [UInt8], at j: Int) -> Float {
        Float(bitPattern: UInt32(bytes[4 * j]) | UInt32(bytes[4 * j + 1]) << 8 | UInt32(bytes[4 * j + 2]) << 16 | UInt32(bytes[4 * j + 3]) << 24)
    }
}
