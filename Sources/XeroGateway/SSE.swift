import NIOCore

/// Server-sent events framing, as OpenAI streams: `data: <json>\n\n`, closed by `data: [DONE]\n\n`.
public enum SSE {
    static let prefix: [UInt8] = Array("data: ".utf8)
    static let suffix: [UInt8] = Array("\n\n".utf8)
    public static let done: [UInt8] = Array("data: [DONE]\n\n".utf8)

    /// One event carrying `json` (which must not contain a raw newline — compact JSON never does).
    public static func event(_ json: [UInt8]) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(json.count + 8)
        out += prefix
        out += json
        out += suffix
        return out
    }

    public static func append(_ json: [UInt8], to buffer: inout ByteBuffer) {
        buffer.writeBytes(prefix)
        buffer.writeBytes(json)
        buffer.writeBytes(suffix)
    }
}
