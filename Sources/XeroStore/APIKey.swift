import Crypto
import Foundation
import XeroCore

/// API keys: `xero_<project_slug>_<random>`, the random part 32 characters of [a-z0-9] from the
/// system CSPRNG (≈165 bits). Only the SHA-256 of the whole key is stored; the key itself is shown
/// once. Lookup is by hash, so no stored secret is ever compared byte by byte (no timing oracle).
public enum APIKey {
    public static let randomLength = 32

    public static func generate(projectSlug: String) -> String {
        randomID("xero_\(projectSlug)_", length: randomLength)
    }

    /// Hex SHA-256 of the key: the only form in which a key is stored.
    public static func hash(_ key: String) -> String {
        Formatting.hex(SHA256.hash(data: Array(key.utf8)))
    }

    /// The project slug the key claims, if the key is well-formed.
    public static func projectSlug(of key: String) -> String? {
        guard key.hasPrefix("xero_") else { return nil }
        let rest = key.dropFirst(5)
        guard let sep = rest.lastIndex(of: "_") else { return nil }
        let slug = rest[..<sep], random = rest[rest.index(after: sep)...]
        guard !slug.isEmpty, random.count >= 16, random.count <= 128,
              random.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber) }) else { return nil }
        return String(slug)
    }

    /// What may be shown of a key after creation: enough to recognise it, nothing to use.
    public static func displayPrefix(_ key: String) -> String {
        let slug = projectSlug(of: key) ?? ""
        return String(key.prefix(5 + slug.count + 1 + 4)) + "…"
    }
}

/// Random identifiers from the system CSPRNG: `prefix` + `length` characters of [a-z0-9].
public func randomID(_ prefix: String = "", length: Int = 24) -> String {
    let alphabet = Array("abcdefghijklmnopqrstuvwxyz0123456789".utf8)
    var rng = SystemRandomNumberGenerator()
    var out = [UInt8](prefix.utf8)
    for _ in 0..<length { out.append(alphabet[Int(rng.next(upperBound: UInt64(alphabet.count)))]) }
    return String(decoding: out, as: UTF8.self)
}
