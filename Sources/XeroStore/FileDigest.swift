import Crypto
import Foundation
import XeroCore

/// SHA-256 of a file, streamed in 4 MiB reads (model files are gigabytes): the model registry's
/// check at upload, and a worker's after download.
public enum FileDigest {
    public static func sha256(ofFile path: String) throws -> String {
        guard let input = FileHandle(forReadingAtPath: path) else { throw RedisError("cannot read \(path)") }
        defer { try? input.close() }
        var hasher = SHA256()
        while let chunk = try input.read(upToCount: 4 << 20), !chunk.isEmpty { hasher.update(data: chunk) }
        return Formatting.hex(hasher.finalize())
    }
}
