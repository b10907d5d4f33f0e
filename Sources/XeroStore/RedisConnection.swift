import CHiredis
import Foundation

/// A reply from Redis.
public enum RedisValue: Sendable, Equatable {
    case null
    case int(Int)
    case bulk([UInt8])
    case status(String)
    case error(String)
    case array([RedisValue])

    public var string: String? {
        switch self {
        case let .bulk(b): return String(decoding: b, as: UTF8.self)
        case let .status(s): return s
        case let .int(i): return String(i)
        default: return nil
        }
    }
    public var int: Int? {
        switch self {
        case let .int(i): return i
        case let .bulk(b): return Int(String(decoding: b, as: UTF8.self))
        default: return nil
        }
    }
    public var array: [RedisValue] { if case let .array(a) = self { return a } else { return [] } }
    /// An HGETALL reply as a dictionary.
    public var hash: [String: String] {
        let a = array
        var out: [String: String] = [:]
        var i = 0
        while i + 1 < a.count { out[a[i].string ?? ""] = a[i + 1].string ?? ""; i += 2 }
        return out
    }
}

public struct RedisError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

/// One blocking hiredis connection. Not thread-safe: owned by one thread at a time.
/// Uses `redisCommandArgv` (binary-safe; hiredis' variadic API cannot be called from Swift).
public final class RedisConnection {
    private var ctx: UnsafeMutablePointer<redisContext>?
    public let address: RedisAddress

    /// Connects to `address`: directly, or through its Sentinels to the current master (checked
    /// with `ROLE`, so a connect during a failover fails instead of landing on a replica).
    public convenience init(_ address: RedisAddress, timeoutSeconds: Int = 2) throws {
        guard let sentinel = address.sentinel else {
            try self.init(address: address, host: address.host, port: address.port, timeoutSeconds: timeoutSeconds, login: true)
            return
        }
        let master = try Self.master(sentinel, of: address)
        try self.init(address: address, host: master.host, port: master.port, timeoutSeconds: timeoutSeconds, login: true)
        let role = try command(["ROLE"]).array.first?.string
        guard role == "master" else {
            close()
            throw RedisError("\(master.host):\(master.port), named master '\(sentinel.master)' by the Sentinels of \(address), is a \(role ?? "node of unknown role") (failover in progress?)")
        }
    }

    init(address: RedisAddress, host: String, port: Int, timeoutSeconds: Int, login: Bool) throws {
        self.address = address
        let tv = timeval(tv_sec: max(timeoutSeconds, 0), tv_usec: 0)
        let connectTimeout = timeval(tv_sec: timeoutSeconds > 0 ? timeoutSeconds : 2, tv_usec: 0)
        guard let c = redisConnectWithTimeout(host, Int32(port), connectTimeout) else {
            throw RedisError("cannot allocate redis context")
        }
        if c.pointee.err != 0 {
            let msg = withUnsafePointer(to: c.pointee.errstr) { $0.withMemoryRebound(to: CChar.self, capacity: 128) { String(cString: $0) } }
            redisFree(c)
            let shown = address.sentinel == nil ? "\(address)" : "\(host):\(port) (\(address))"
            throw RedisError("cannot connect to \(shown): \(msg)")
        }
        // 0 = block forever (a subscriber waits for messages); TCP keepalive still detects a dead peer.
        redisSetTimeout(c, tv)
        redisEnableKeepAlive(c)
        ctx = c
        if login { try handshake() }
    }

    /// Asks the Sentinels in order where the master is; the first that knows wins. Sentinels are
    /// asked without credentials (the URL's log in to the data nodes).
    static func master(_ sentinel: RedisAddress.Sentinel, of address: RedisAddress) throws -> RedisAddress.Endpoint {
        var why: [String] = []
        for e in sentinel.endpoints {
            do {
                let s = try RedisConnection(address: address, host: e.host, port: e.port, timeoutSeconds: 1, login: false)
                let a = try s.command(["SENTINEL", "get-master-addr-by-name", sentinel.master]).array.compactMap(\.string)
                if a.count == 2, let port = Int(a[1]), (1...65535).contains(port), !a[0].isEmpty {
                    return RedisAddress.Endpoint(host: a[0], port: port)
                }
                why.append("\(e.host):\(e.port) knows no master '\(sentinel.master)'")
            } catch {
                why.append("\(error)")
            }
        }
        throw RedisError("no Sentinel of \(address) named the master: " + why.joined(separator: "; "))
    }

    /// Log in and pick the database, on every (re)connect: every reconnect makes a new
    /// `RedisConnection`, so no connection ever runs a command before this. A refusal is thrown
    /// (naming the redacted address, never the password) rather than left for the first command.
    private func handshake() throws {
        if let password = address.password {
            let reply = try command(address.username.map { ["AUTH", $0, password] } ?? ["AUTH", password])
            if case let .error(e) = reply {
                close()
                let who = address.username.map { "as user '\($0)'" } ?? "with the default user's password"
                throw RedisError("cannot log in to \(address) \(who): \(e)")
            }
        }
        if address.db != 0, case let .error(e) = try command(["SELECT", String(address.db)]) {
            close()
            throw RedisError("cannot select database \(address.db) on \(address): \(e)")
        }
    }

    /// PING, with an error reply thrown: a server that wants a password we did not send answers
    /// NOAUTH here, at start, instead of on some later command.
    public func ping() throws {
        guard case let .error(e) = try command(["PING"]) else { return }
        let hint = e.hasPrefix("NOAUTH") ? " (the URL needs credentials: redis://[user]:password@host:port)" : ""
        throw RedisError("redis at \(address) refused PING: \(e)\(hint)")
    }

    private func close() {
        if let ctx { redisFree(ctx) }
        ctx = nil
    }

    deinit { if let ctx { redisFree(ctx) } }

    private var errorString: String {
        guard let ctx else { return "closed" }
        return withUnsafePointer(to: ctx.pointee.errstr) { $0.withMemoryRebound(to: CChar.self, capacity: 128) { String(cString: $0) } }
    }

    public func command(_ args: [String]) throws -> RedisValue {
        try pipeline([args.map { Array($0.utf8) }])[0]
    }

    public func command(bytes args: [[UInt8]]) throws -> RedisValue {
        try pipeline([args])[0]
    }

    /// Sends every command, then reads every reply: one round trip for the lot.
    public func pipeline(_ commands: [[[UInt8]]]) throws -> [RedisValue] {
        guard let ctx else { throw RedisError("connection closed") }
        for args in commands { try append(ctx, args) }
        var out: [RedisValue] = []
        out.reserveCapacity(commands.count)
        for _ in commands {
            var reply: UnsafeMutableRawPointer?
            guard redisGetReply(ctx, &reply) == REDIS_OK, let reply else {
                let e = errorString
                redisFree(ctx); self.ctx = nil
                throw RedisError("redis I/O error: \(e)")
            }
            let r = reply.assumingMemoryBound(to: redisReply.self)
            out.append(Self.convert(r))
            freeReplyObject(reply)
        }
        // A master demoted by a failover answers writes with READONLY: drop the connection, so
        // the next use reconnects (through the Sentinels, to the new master).
        if out.contains(where: { if case let .error(e) = $0 { e.hasPrefix("READONLY") } else { false } }) { close() }
        return out
    }

    public var isBroken: Bool { ctx == nil }

    /// Enters subscriber mode on `channel`; read messages with `readReply`.
    public func subscribe(_ channel: String) throws {
        guard let ctx else { throw RedisError("connection closed") }
        try append(ctx, [Array("SUBSCRIBE".utf8), Array(channel.utf8)])
        _ = try readReply()
    }

    /// Blocks for the next reply (subscriber mode).
    public func readReply() throws -> RedisValue {
        guard let ctx else { throw RedisError("connection closed") }
        var reply: UnsafeMutableRawPointer?
        guard redisGetReply(ctx, &reply) == REDIS_OK, let reply else {
            let e = errorString
            redisFree(ctx); self.ctx = nil
            throw RedisError("redis I/O error: \(e)")
        }
        defer { freeReplyObject(reply) }
        return Self.convert(reply.assumingMemoryBound(to: redisReply.self))
    }

    private func append(_ ctx: UnsafeMutablePointer<redisContext>, _ args: [[UInt8]]) throws {
        // hiredis copies the arguments into its output buffer, so the pointers need only live for this call.
        var lengths = args.map { $0.count }
        let buffers = args.map { a -> UnsafeMutablePointer<CChar> in
            let p = UnsafeMutablePointer<CChar>.allocate(capacity: max(a.count, 1))
            a.withUnsafeBytes { src in if a.count > 0 { UnsafeMutableRawPointer(p).copyMemory(from: src.baseAddress!, byteCount: a.count) } }
            return p
        }
        defer { for b in buffers { b.deallocate() } }
        var argv: [UnsafePointer<CChar>?] = buffers.map { UnsafePointer($0) }
        let rc = redisAppendCommandArgv(ctx, Int32(args.count), &argv, &lengths)
        guard rc == REDIS_OK else { throw RedisError("redisAppendCommandArgv failed: \(errorString)") }
    }

    private static func convert(_ r: UnsafeMutablePointer<redisReply>) -> RedisValue {
        let reply = r.pointee
        switch reply.type {
        case REDIS_REPLY_NIL: return .null
        case REDIS_REPLY_INTEGER: return .int(Int(reply.integer))
        case REDIS_REPLY_STRING:
            return .bulk(Array(UnsafeRawBufferPointer(start: reply.str, count: Int(reply.len))))
        case REDIS_REPLY_STATUS:
            return .status(String(decoding: UnsafeRawBufferPointer(start: reply.str, count: Int(reply.len)), as: UTF8.self))
        case REDIS_REPLY_ERROR:
            return .error(String(decoding: UnsafeRawBufferPointer(start: reply.str, count: Int(reply.len)), as: UTF8.self))
        case REDIS_REPLY_ARRAY:
            var items: [RedisValue] = []
            for i in 0..<Int(reply.elements) {
                if let e = reply.element[i] { items.append(convert(e)) } else { items.append(.null) }
            }
            return .array(items)
        default: return .null
        }
    }
}
