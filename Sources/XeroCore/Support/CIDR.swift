import Foundation

/// An IPv4 or IPv6 network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`, or a bare address).
public struct CIDR: Sendable, Equatable, CustomStringConvertible {
    public let address: [UInt8]   // 4 or 16 bytes
    public let prefix: Int

    public init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        guard let first = parts.first, let addr = CIDR.parseAddress(first) else { return nil }
        let maxPrefix = addr.count * 8
        var p = maxPrefix
        if parts.count == 2 {
            guard let v = Int(parts[1]), (0...maxPrefix).contains(v) else { return nil }
            p = v
        }
        address = addr
        prefix = p
    }

    public var description: String {
        let a = address.count == 4 ? address.map(String.init).joined(separator: ".") : CIDR.formatIPv6(address)
        return "\(a)/\(prefix)"
    }

    /// Whether `ip` (textual) is inside this network. IPv4-mapped IPv6 (`::ffff:1.2.3.4`) counts as IPv4.
    public func contains(_ ip: String) -> Bool {
        guard var bytes = CIDR.parseAddress(ip) else { return false }
        if bytes.count == 16, address.count == 4, bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xff, bytes[11] == 0xff {
            bytes = Array(bytes[12...])
        }
        guard bytes.count == address.count else { return false }
        var bits = prefix
        for i in 0..<bytes.count where bits > 0 {
            let take = min(8, bits)
            let mask: UInt8 = take == 8 ? 0xff : ~(0xff >> UInt8(take))
            if bytes[i] & mask != address[i] & mask { return false }
            bits -= take
        }
        return true
    }

    static func parseAddress(_ s: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, s, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, s, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
        return nil
    }

    static func formatIPv6(_ b: [UInt8]) -> String {
        var a = in6_addr()
        withUnsafeMutableBytes(of: &a) { $0.copyBytes(from: b) }
        var buf = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        inet_ntop(AF_INET6, &a, &buf, socklen_t(buf.count))
        return String(cString: buf)
    }
}
