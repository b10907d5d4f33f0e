/// Messages between a worker (DEALER) and the router (ROUTER). The router sends jobs only against
/// credits the worker granted: a worker is never sent more jobs than it asked for.
public enum WorkerMessage: Sendable, Equatable {
    /// First message (and the answer to `.identify`): who the worker is and what it serves.
    case hello(WorkerInfo)
    /// The worker has `n` more free slots.
    case credit(Int)
    /// Liveness, once a second; `active` is the number of jobs running.
    case heartbeat(active: Int)
    /// The job produced its first event: from now on it cannot be re-dispatched elsewhere.
    case started(requestId: String)
    /// The job ended (any way); returns its slot unless the worker is draining.
    case done(JobReport)
    /// The worker will take no new jobs and leaves once its running jobs finish.
    case draining
    /// The worker is gone (sent at exit).
    case bye
    /// Hashes of the prompt-prefix blocks whose KV state the worker's engine holds (sent with a
    /// heartbeat when they changed), so a router can prefer the worker that has a prompt's prefix.
    case prefixes([UInt64])
    /// Before hello, from a worker started with `--model NAME` (or `auto`): a download token for
    /// that registry model. `joinKey` as in hello (plain fabric only; with CURVE the handshake proved it).
    case modelRequest(name: String, joinKey: String)
    /// Take over relaying a job this worker runs (its relaying router went down or restarted, or a
    /// router asked `relocate`): the ticket the dispatching router sealed (docs/routing.md,
    /// "Handover"), and whether the job has produced events (then it must never be re-dispatched).
    case adopt(ticket: [UInt8], started: Bool)
    /// A job this router dispatched or adopted is relayed by another router now: forget it, no
    /// credit back, nothing to publish.
    case moved(requestId: String)
    /// Give back up to `n` credits not spent yet (the worker moves them to a router with work);
    /// answered with `RouterMessage.returned`.
    case reclaim(Int)

    static let wireKind: UInt8 = 0x57 // "W"

    public func encode() -> [UInt8] {
        var w = WireWriter(capacity: 64)
        w.u8(Self.wireKind); w.u8(wireVersion)
        switch self {
        case let .hello(info):
            w.u8(1); w.string(info.id); w.int(info.slots); w.int(info.freeSlots); w.strings(info.models)
            w.strings(info.capabilities); w.string(info.engine); w.string(info.host); w.int(info.pid); w.string(info.joinKey)
        case let .credit(n): w.u8(2); w.int(n)
        case let .heartbeat(active): w.u8(3); w.int(active)
        case let .started(id): w.u8(4); w.string(id)
        case let .done(report):
            w.u8(5); w.string(report.requestId); w.int(report.attempt); w.string(report.outcome)
            w.i64(report.firstTokenAtMs); w.i64(report.finishedAtMs); w.int(report.promptTokens); w.int(report.completionTokens)
            w.bool(report.returnsCredit)
        case .draining: w.u8(6)
        case .bye: w.u8(7)
        case let .prefixes(hashes): w.u8(8); w.int(hashes.count); for h in hashes { w.u64(h) }
        case let .modelRequest(name, joinKey): w.u8(9); w.string(name); w.string(joinKey)
        case let .adopt(ticket, started): w.u8(10); w.blob(ticket); w.bool(started)
        case let .moved(id): w.u8(11); w.string(id)
        case let .reclaim(n): w.u8(12); w.int(n)
        }
        return w.bytes
    }

    private typealias L = WireLimits

    public static func decode(_ bytes: [UInt8]) throws -> WorkerMessage {
        var r = WireReader(bytes)
        try r.header(expecting: wireKind)
        let m: WorkerMessage
        switch try r.u8() {
        case 1:
            let id = try r.string(max: L.maxIDBytes, "worker id")
            let slots = try r.int(in: L.slots, "slots")
            let free = try r.int(in: 0...slots, "free slots")
            m = .hello(WorkerInfo(id: id, slots: slots, freeSlots: free,
                                  models: try r.strings(maxCount: L.maxModels, maxBytes: L.maxNameBytes, "models"),
                                  capabilities: try r.strings(maxCount: L.maxCapabilities, maxBytes: L.maxNameBytes, "capabilities"),
                                  engine: try r.string(max: L.maxNameBytes, "engine"), host: try r.string(max: L.maxNameBytes, "host"),
                                  pid: try r.int(in: 0...Int(Int32.max), "pid"), joinKey: try r.string(max: L.maxIDBytes, "join key")))
        case 2: m = .credit(try r.int(in: L.slots, "credit"))
        case 3: m = .heartbeat(active: try r.int(in: 0...L.slots.upperBound, "active jobs"))
        case 4: m = .started(requestId: try r.string(max: L.maxIDBytes, "request id"))
        case 5:
            m = .done(JobReport(requestId: try r.string(max: L.maxIDBytes, "request id"), attempt: try r.int(in: L.attempts, "attempt"),
                                outcome: try r.string(max: L.maxNameBytes, "outcome"), firstTokenAtMs: try r.time("first token"),
                                finishedAtMs: try r.time("finished"), promptTokens: try r.int(in: L.tokens, "prompt tokens"),
                                completionTokens: try r.int(in: L.tokens, "completion tokens"), returnsCredit: try r.bool()))
        case 6: m = .draining
        case 7: m = .bye
        case 8:
            let n = try r.int(in: 0...L.maxPrefixHashes, "prefix hash count")
            m = .prefixes(try (0..<n).map { _ in try r.u64() })
        case 9: m = .modelRequest(name: try r.string(max: L.maxNameBytes, "model"), joinKey: try r.string(max: L.maxIDBytes, "join key"))
        case 10:
            let ticket = try r.blob()
            guard ticket.count <= L.maxTicketBytes else { throw WireError.invalid("ticket of \(ticket.count) bytes") }
            m = .adopt(ticket: ticket, started: try r.bool())
        case 11: m = .moved(requestId: try r.string(max: L.maxIDBytes, "request id"))
        case 12: m = .reclaim(try r.int(in: L.slots, "reclaim"))
        case let k: throw WireError.invalid("unknown worker message \(k)")
        }
        guard r.isAtEnd else { throw WireError.invalid("trailing bytes after worker message") }
        return m
    }
}

/// Router → worker.
public enum RouterMessage: Sendable, Equatable {
    /// A job, and the sealed ticket any router of the deployment accepts to take over its relay
    /// (empty from routers that give none, e.g. tests).
    case job(JobEnvelope, ticket: [UInt8])
    /// Stop this job now (client went away or it timed out).
    case cancel(requestId: String)
    /// The router does not know this worker (it restarted): send `.hello` again.
    case identify
    /// The worker was refused (bad join key, bad hello); it should exit with this reason.
    case refused(String)
    /// The answer to `modelRequest`: which model, a download token for it (valid minutes, for that
    /// model only), and the file's SHA-256 and size.
    case modelGrant(name: String, token: String, sha256: String, bytes: Int)
    /// The answer to `modelRequest` when there is nothing this worker may fetch.
    case modelRefused(name: String, reason: String)
    /// The answer to every heartbeat (and, unasked, when the router's demand for this worker rises
    /// from 0): who the router is (a new id: it restarted), and how many queued jobs it holds that
    /// this worker could run, capped at its slots.
    case ack(routerId: String, demand: Int)
    /// The answer to `reclaim`: this many credits were unspent and are the worker's again.
    case returned(Int)
    /// The answer to `adopt`: this router relays the job now.
    case adopted(requestId: String)
    /// The answer to `adopt` when this router runs the request elsewhere already (or the ticket
    /// is not good): the worker keeps its old relay or, if that is gone, stops the run silently.
    case adoptRefused(requestId: String)
    /// A client lost the router that relayed these jobs: whoever runs one adopts it here.
    case relocate([String])

    static let wireKind: UInt8 = 0x52 // "R"

    public func encode() -> [UInt8] {
        switch self {
        case let .job(env, ticket):
            // The envelope carries its own header and goes last; the ticket comes before it.
            var w = WireWriter(capacity: 16 + ticket.count); w.u8(Self.wireKind); w.u8(wireVersion); w.u8(1); w.blob(ticket)
            return w.bytes + env.encode()
        case let .cancel(id):
            var w = WireWriter(); w.u8(Self.wireKind); w.u8(wireVersion); w.u8(2); w.string(id); return w.bytes
        case .identify:
            return [Self.wireKind, wireVersion, 3]
        case let .refused(why):
            var w = WireWriter(); w.u8(Self.wireKind); w.u8(wireVersion); w.u8(4); w.string(why); return w.bytes
        case let .modelGrant(name, token, sha256, bytes):
            var w = WireWriter(); w.u8(Self.wireKind); w.u8(wireVersion); w.u8(5)
            w.string(name); w.string(token); w.string(sha256); w.int(bytes); return w.bytes
        case let .modelRefused(name, reason):
            var w = WireWriter(); w.u8(Self.wireKind); w.u8(wireVersion); w.u8(6); w.string(name); w.string(reason); return w.bytes
        case let .ack(router, demand):
            var w = WireWriter(); w.u8(Self.wireKind); w.u8(wireVersion); w.u8(7); w.string(router); w.int(demand); return w.bytes
        case let .returned(n):
            var w = WireWriter(); w.u8(Self.wireKind); w.u8(wireVersion); w.u8(8); w.int(n); return w.bytes
        case let .adopted(id):
            var w = WireWriter(); w.u8(Self.wireKind); w.u8(wireVersion); w.u8(9); w.string(id); return w.bytes
        case let .adoptRefused(id):
            var w = WireWriter(); w.u8(Self.wireKind); w.u8(wireVersion); w.u8(10); w.string(id); return w.bytes
        case let .relocate(ids):
            var w = WireWriter(); w.u8(Self.wireKind); w.u8(wireVersion); w.u8(11); w.strings(ids); return w.bytes
        }
    }

    private typealias L = WireLimits

    public static func decode(_ bytes: [UInt8]) throws -> RouterMessage {
        var r = WireReader(bytes)
        try r.header(expecting: wireKind)
        let kind = try r.u8()
        switch kind {
        case 1:
            let ticket = try r.blob()
            guard ticket.count <= L.maxTicketBytes else { throw WireError.invalid("ticket of \(ticket.count) bytes") }
            return .job(try JobEnvelope.decode(Array(bytes[r.offset...])), ticket: ticket)
        case 2:
            let id = try r.string(max: L.maxIDBytes, "request id")
            guard r.isAtEnd else { throw WireError.invalid("trailing bytes after cancel") }
            return .cancel(requestId: id)
        case 3:
            guard r.isAtEnd else { throw WireError.invalid("trailing bytes after identify") }
            return .identify
        case 4:
            let why = try r.string(max: L.maxTextBytes, "reason")
            guard r.isAtEnd else { throw WireError.invalid("trailing bytes after refused") }
            return .refused(why)
        case 5:
            let m = RouterMessage.modelGrant(name: try r.string(max: L.maxNameBytes, "model"), token: try r.string(max: L.maxIDBytes, "token"),
                                             sha256: try r.string(max: 64, "sha256"), bytes: try r.int(in: 1...(1 << 40), "model bytes"))
            guard r.isAtEnd else { throw WireError.invalid("trailing bytes after model grant") }
            return m
        case 6:
            let m = RouterMessage.modelRefused(name: try r.string(max: L.maxNameBytes, "model"), reason: try r.string(max: L.maxTextBytes, "reason"))
            guard r.isAtEnd else { throw WireError.invalid("trailing bytes after model refusal") }
            return m
        case 7...11:
            let m: RouterMessage
            switch kind {
            case 7: m = .ack(routerId: try r.string(max: L.maxIDBytes, "router id"), demand: try r.int(in: 0...L.slots.upperBound, "demand"))
            case 8: m = .returned(try r.int(in: 0...L.slots.upperBound, "returned credits"))
            case 9: m = .adopted(requestId: try r.string(max: L.maxIDBytes, "request id"))
            case 10: m = .adoptRefused(requestId: try r.string(max: L.maxIDBytes, "request id"))
            default: m = .relocate(try r.strings(maxCount: L.maxRelocateIds, maxBytes: L.maxIDBytes, "request ids"))
            }
            guard r.isAtEnd else { throw WireError.invalid("trailing bytes after router message \(kind)") }
            return m
        case let k: throw WireError.invalid("unknown router message \(k)")
        }
    }
}

/// Gateway → router (PUSH/PULL): new jobs, cancellations, and liveness.
public enum GatewayMessage: Sendable, Equatable {
    case submit(JobEnvelope)
    case cancel(requestId: String)
    /// Once a second from every gateway and batch runner (its reply-to id): a router that stops
    /// hearing it cancels its jobs, since no one is left to read their answers.
    case alive(gatewayId: String)
    /// The client lost the router that held or relayed these jobs: ask your workers for them
    /// (`RouterMessage.relocate`).
    case relocate([String])
    /// Continue a job whose worker died mid-stream (after `StreamEvent.lost`): on another worker,
    /// replaying the tokens the client has, numbering events from `fromSeq`.
    case resume(requestId: String, fromSeq: Int, tokens: [Int32])

    static let wireKind: UInt8 = 0x47 // "G"

    public func encode() -> [UInt8] {
        switch self {
        case let .submit(env): return [Self.wireKind, wireVersion, 1] + env.encode()
        case let .cancel(id):
            var w = WireWriter(); w.u8(Self.wireKind); w.u8(wireVersion); w.u8(2); w.string(id); return w.bytes
        case let .alive(id):
            var w = WireWriter(); w.u8(Self.wireKind); w.u8(wireVersion); w.u8(3); w.string(id); return w.bytes
        case let .relocate(ids):
            var w = WireWriter(); w.u8(Self.wireKind); w.u8(wireVersion); w.u8(4); w.strings(ids); return w.bytes
        case let .resume(id, from, tokens):
            var w = WireWriter(capacity: 32 + 4 * tokens.count); w.u8(Self.wireKind); w.u8(wireVersion); w.u8(5)
            w.string(id); w.int(from); w.u32(UInt32(tokens.count)); for t in tokens { w.u32(UInt32(bitPattern: t)) }
            return w.bytes
        }
    }

    private typealias L = WireLimits

    public static func decode(_ bytes: [UInt8]) throws -> GatewayMessage {
        var r = WireReader(bytes)
        try r.header(expecting: wireKind)
        switch try r.u8() {
        case 1: return .submit(try JobEnvelope.decode(Array(bytes[3...])))
        case 2:
            let id = try r.string(max: L.maxIDBytes, "request id")
            guard r.isAtEnd else { throw WireError.invalid("trailing bytes after cancel") }
            return .cancel(requestId: id)
        case 3:
            let id = try r.string(max: L.maxIDBytes, "gateway id")
            guard r.isAtEnd else { throw WireError.invalid("trailing bytes after alive") }
            return .alive(gatewayId: id)
        case 4:
            let ids = try r.strings(maxCount: L.maxRelocateIds, maxBytes: L.maxIDBytes, "request ids")
            guard r.isAtEnd else { throw WireError.invalid("trailing bytes after relocate") }
            return .relocate(ids)
        case 5:
            let id = try r.string(max: L.maxIDBytes, "request id"), from = try r.int(in: L.seqs, "seq")
            let n = Int(try r.u32())
            guard n <= L.maxReplayTokens else { throw WireError.invalid("\(n) replay tokens") }
            let tokens = try (0..<n).map { _ in Int32(bitPattern: try r.u32()) }
            guard r.isAtEnd else { throw WireError.invalid("trailing bytes after resume") }
            return .resume(requestId: id, fromSeq: from, tokens: tokens)
        case let k: throw WireError.invalid("unknown gateway message \(k)")
        }
    }
}

/// What a worker tells the router about itself.
public struct WorkerInfo: Sendable, Equatable {
    public var id: String
    public var slots: Int
    public var freeSlots: Int
    /// Model ids served; `*` serves any model (the simulator).
    public var models: [String]
    /// `chat`, `embeddings`, `rerank`.
    public var capabilities: [String]
    public var engine: String
    public var host: String
    public var pid: Int
    /// Presented to the router; checked once tenancy's join keys exist (empty = none).
    public var joinKey: String

    public init(id: String, slots: Int, freeSlots: Int, models: [String], capabilities: [String], engine: String, host: String, pid: Int, joinKey: String = "") {
        self.id = id
        self.slots = slots
        self.freeSlots = freeSlots
        self.models = models
        self.capabilities = capabilities
        self.engine = engine
        self.host = host
        self.pid = pid
        self.joinKey = joinKey
    }

    public func serves(model: String) -> Bool { models.contains("*") || models.contains(model) }

    /// Whether this worker can run `job`: its model, and the capability its kind needs.
    public func serves(_ job: JobEnvelope) -> Bool { serves(model: job.model) && capabilities.contains(job.kind.capability) }
}

/// A finished job as the worker saw it, for the job record in Redis.
public struct JobReport: Sendable, Equatable {
    public var requestId: String
    public var attempt: Int
    /// `done`, `error:<code>`, `rejected:<code>`, `cancelled`, `timeout`; and two that say the
    /// job was not run here: `requeue` (it came against no credit: queue it again) and
    /// `duplicate` (this worker already runs that request).
    public var outcome: String
    public var firstTokenAtMs: Int64
    public var finishedAtMs: Int64
    public var promptTokens: Int
    public var completionTokens: Int
    /// Whether the job's slot goes back to this router as a credit. False when the worker gives
    /// it to another router that has work (docs/routing.md, "Credits across routers").
    public var returnsCredit: Bool

    /// An outcome by its kind: `done`, `cancelled`, `timeout`, `rejected`, `error` — a fixed set
    /// (metric labels): the code after the colon, and anything unknown, is the worker's to say.
    public static func kind(ofOutcome outcome: String) -> String {
        let kind = outcome.split(separator: ":", maxSplits: 1).first.map(String.init) ?? ""
        return ["done", "cancelled", "timeout", "rejected", "error"].contains(kind) ? kind : "error"
    }

    public init(requestId: String, attempt: Int, outcome: String, firstTokenAtMs: Int64, finishedAtMs: Int64, promptTokens: Int, completionTokens: Int,
                returnsCredit: Bool = true) {
        self.returnsCredit = returnsCredit
        self.requestId = requestId
        self.attempt = attempt
        self.outcome = outcome
        self.firstTokenAtMs = firstTokenAtMs
        self.finishedAtMs = finishedAtMs
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
    }
}
