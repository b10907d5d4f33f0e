import Foundation

/// Reads a `.safetensors` file: an 8-byte little-endian header length, a JSON header naming each
/// tensor's dtype, shape and byte range, then the raw data. F32 tensors only (what MiniLM ships).
public struct SafeTensors: Sendable {
    public struct Tensor: Sendable {
        public let shape: [Int]
        public let values: [Float]
    }

    public let tensors: [String: Tensor]

    public init(path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else { throw EmbeddingError.load("cannot read \(path)") }
        guard data.count >= 8 else { throw EmbeddingError.load("\(path): too short for a safetensors file") }
        let headerLength = data.prefix(8).enumerated().reduce(0) { $0 | (Int($1.element) << (8 * $1.offset)) }
        guard headerLength > 0, headerLength <= data.count - 8 else { throw EmbeddingError.load("\(path): header length \(headerLength) exceeds the file") }
        let headerData = data.subdata(in: 8..<(8 + headerLength))
        guard let header = try? JSONSerialization.jsonObject(with: headerData) as? [String: Any] else {
            throw EmbeddingError.load("\(path): header is not JSON")
        }
        let base = 8 + headerLength
        var out: [String: Tensor] = [:]
        for (name, value) in header where name != "__metadata__" {
            guard let info = value as? [String: Any], let dtype = info["dtype"] as? String, let shape = info["shape"] as? [Int],
                  let offsets = info["data_offsets"] as? [Int], offsets.count == 2 else {
                throw EmbeddingError.load("\(path): bad entry for \(name)")
            }
            guard dtype == "F32" else { continue }   // e.g. I64 position ids: not needed
            let count = shape.reduce(1, *)
            let start = base + offsets[0], end = base + offsets[1]
            guard offsets[0] >= 0, start <= end, end <= data.count, end - start == count * 4 else {
                throw EmbeddingError.load("\(path): tensor \(name) lies outside the file or has the wrong size")
            }
            var values = [Float](repeating: 0, count: count)
            values.withUnsafeMutableBytes { dst in data.copyBytes(to: dst, from: start..<end) }
            out[name] = Tensor(shape: shape, values: values)
        }
        tensors = out
    }

    public func tensor(_ name: String, shape: [Int]) throws -> [Float] {
        guard let t = tensors[name] else { throw EmbeddingError.load("missing tensor \(name)") }
        guard t.shape == shape else { throw EmbeddingError.load("tensor \(name) has shape \(t.shape), expected \(shape)") }
        return t.values
    }
}

public enum EmbeddingError: Error, CustomStringConvertible {
    case load(String)
    public var description: String {
        switch self { case let .load(m): return "cannot load the embedding model: \(m)" }
    }
}
