import Foundation

/// Where a Redis server is and how to log in, parsed from one URL grammar:
///
///     redis://[[user]:password@]host[:port][/db]
///
/// User and password are percent-decoded (RFC 3986); `redis://:pw@h` logs in as the default user
/// (`AUTH pw`), `redis://alice:pw@h` as an ACL user (`AUTH alice pw`, Redis 6+). Port defaults to
/// 6379, db to 0. Anything else is an error naming what is wrong — and never the password:
/// `description` and every error message redact it.
///
/// and for Redis Sentinel:
///
///     redis+sentinel://[[user]:password@]host:port[,host:port…]/mastername[/db]
///
/// Every connect asks the Sentinels (in order, the first that answers wins) where the master named
/// `mastername` is, connects there, and checks that it really is the master (`ROLE`); so after a
/// failover the next reconnect lands on the new master. The credentials log in to the data nodes;
/// the Sentinels are asked without (docs/architecture.md, "Redis").
public struct RedisAddress: Sendable, Equatable, CustomStringConvertible {
    /// The URL schemes this grammar knows.
    public enum Scheme: String, Sendable {
        case redis
        case sentinel = "redis+sentinel"
        /// TLS: hiredis 0.14 has none (docs/architecture.md, "Redis").
        case tls = "rediss"
    }

    public var host: String
    public var port: Int
    public var db: Int
    /// The ACL user; nil = Redis' `default` user.
    public var username: String?
    /// Sent with AUTH after every connect; nil = no AUTH.
    public var password: String?
    /// Set for `redis+sentinel://`: the Sentinels to ask and the master's name. `host`/`port` are
    /// then the first Sentinel's.
    public var sentinel: Sentinel?

    public struct Endpoint: Sendable, Equatable {
        public var host: String
        public var port: Int
        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }
    }

    public struct Sentinel: Sendable, Equatable {
        public var endpoints: [Endpoint]
        public var master: String
    }

    public init(host: String = "127.0.0.1", port: Int = 6379, db: Int = 0, username: String? = nil, password: String? = nil) {
        self.host = host
        self.port = port
        self.db = db
        self.username = username
        self.password = password
    }

    public init(url: String) throws {
        // Errors quote the redacted URL only: a password must not reach a log or a terminal.
        let shown = Self.redact(url)
        func fail(_ why: String) -> RedisError { RedisError("invalid Redis URL \(shown): \(why)") }

        guard let sep = url.range(of: "://") else {
            throw fail("expected redis://[[user]:password@]host[:port][/db]")
        }
        let schemeText = url[..<sep.lowerBound].lowercased()
        let scheme = Scheme(rawValue: schemeText)
        switch scheme {
        case .redis, .sentinel: break
        case .tls: throw fail("rediss:// (TLS) is not supported: hiredis 0.14 has no TLS (docs/architecture.md, \"Redis\": use stunnel or a private network)")
        case nil: throw fail("unsupported scheme '\(schemeText)'; expected redis://[[user]:password@]host[:port][/db]")
        }
        var rest = url[sep.upperBound...]
        // Credentials end at the last '@' (neither host, port nor db may hold one), so a raw '@'
        // or '/' in a password still parses; percent-encoding is the portable way.
        username = nil
        password = nil
        if let at = rest.lastIndex(of: "@") {
            let userinfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
            guard let colon = userinfo.firstIndex(of: ":") else {
                throw fail("credentials need a password: redis://[user]:password@host (a user alone is not enough)")
            }
            let user = try Self.percentDecode(userinfo[..<colon], what: "user", fail)
            let pass = try Self.percentDecode(userinfo[userinfo.index(after: colon)...], what: "password", fail)
            username = user.isEmpty ? nil : user
            password = pass
        }
        guard !rest.contains("?"), !rest.contains("#") else { throw fail("query parameters and fragments are not supported") }

        let authority: Substring
        let path: Substring
        if let slash = rest.firstIndex(of: "/") {
            authority = rest[..<slash]
            path = rest[rest.index(after: slash)...]
        } else {
            authority = rest
            path = ""
        }

        if scheme == .sentinel {
            // host:port[,host:port…]/mastername[/db]
            let endpoints = try authority.split(separator: ",", omittingEmptySubsequences: false).map { try Self.endpoint($0, defaultPort: 26379, fail) }
            guard !endpoints.isEmpty else { throw fail("no Sentinel host") }
            let parts = path.split(separator: "/", omittingEmptySubsequences: false)
            guard let name = parts.first, !name.isEmpty else {
                throw fail("no master name: redis+sentinel://host:port[,host:port…]/mastername[/db]")
            }
            guard parts.count <= 2 else { throw fail("unexpected '\(path)' after the master name") }
            guard name.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }) else {
                throw fail("the master name '\(name)' may hold letters, digits, '-', '_' and '.' only")
            }
            host = endpoints[0].host
            port = endpoints[0].port
            db = try parts.count == 2 ? Self.database(parts[1], fail) : 0
            sentinel = Sentinel(endpoints: endpoints, master: String(name))
            return
        }
        let e = try Self.endpoint(authority, defaultPort: 6379, fail)
        host = e.host
        port = e.port
        db = path.isEmpty ? 0 : try Self.database(path, fail)
    }

    /// A host (a name, an IPv4 address, or an IPv6 address in brackets) with an optional port.
    static func endpoint(_ authority: Substring, defaultPort: Int, _ fail: (String) -> RedisError) throws -> Endpoint {
        var host: String
        var portText: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { throw fail("an IPv6 host needs its closing ']'") }
            host = String(authority[authority.index(after: authority.startIndex)..<close])
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw fail("unexpected '\(after)' after the IPv6 host") }
                portText = after.dropFirst()
            }
        } else if let colon = authority.firstIndex(of: ":") {
            host = String(authority[..<colon])
            portText = authority[authority.index(after: colon)...]
        } else {
            host = String(authority)
        }
        guard !host.isEmpty else { throw fail("no host") }
        var port = defaultPort
        if let portText {
            guard !portText.isEmpty, portText.allSatisfy(\.isASCIIDigit), let p = Int(portText), (1...65535).contains(p) else {
                throw fail("bad port '\(portText)' (expected 1...65535)")
            }
            port = p
        }
        return Endpoint(host: host, port: port)
    }

    static func database(_ path: Substring, _ fail: (String) -> RedisError) throws -> Int {
        guard !path.isEmpty, path.allSatisfy(\.isASCIIDigit), let d = Int(path) else {
            throw fail("the database '\(path)' is not a non-negative integer (redis://host:port/db)")
        }
        return d
    }

    /// The URL with the password replaced by `***` (the user stays: it is not a secret).
    public var description: String {
        var s = sentinel == nil ? "redis://" : "redis+sentinel://"
        if password != nil { s += (username.map(Self.percentEncode) ?? "") + ":***@" }
        func show(_ h: String, _ p: Int) -> String { (h.contains(":") ? "[\(h)]" : h) + ":\(p)" }
        if let sentinel {
            return s + sentinel.endpoints.map { show($0.host, $0.port) }.joined(separator: ",") + "/\(sentinel.master)/\(db)"
        }
        return s + show(host, port) + "/\(db)"
    }

    /// `url` with whatever stands between `://` and the last `@` after the user replaced by `***`:
    /// safe to print even when `url` does not parse.
    public static func redact(_ url: String) -> String {
        guard let sep = url.range(of: "://"), let at = url[sep.upperBound...].lastIndex(of: "@") else { return url }
        let userinfo = url[sep.upperBound..<at]
        let user = userinfo.firstIndex(of: ":").map { userinfo[..<$0] } ?? ""
        return String(url[..<sep.upperBound]) + String(user) + ":***" + String(url[at...])
    }

    /// RFC 3986 percent-decoding: `%XX` is a byte, the result must be UTF-8.
    static func percentDecode(_ s: Substring, what: String, _ fail: (String) -> RedisError) throws -> String {
        var bytes: [UInt8] = []
        var it = Array(s.utf8)[...]
        while let b = it.popFirst() {
            guard b == UInt8(ascii: "%") else { bytes.append(b); continue }
            guard it.count >= 2, let hi = hexValue(it.removeFirst()), let lo = hexValue(it.removeFirst()) else {
                throw fail("bad percent-encoding in the \(what) (expected %XX)")
            }
            bytes.append(hi << 4 | lo)
        }
        guard let out = String(validating: bytes, as: UTF8.self) else { throw fail("the \(what) is not UTF-8 once percent-decoded") }
        return out
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    /// Encodes everything but RFC 3986's unreserved characters, so `description` parses back.
    static func percentEncode(_ s: String) -> String {
        var out = ""
        for b in s.utf8 {
            let c = Character(Unicode.Scalar(b))
            if b < 0x80 && (c.isLetter || c.isNumber || "-._~".contains(c)) { out.append(c) } else { out += String(format: "%%%02X", b) }
        }
        return out
    }
}

extension Character {
    fileprivate var isASCIIDigit: Bool { ("0"..."9").contains(self) }
}
