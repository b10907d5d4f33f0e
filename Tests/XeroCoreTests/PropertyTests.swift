import Testing
import PropertyBased
@testable import XeroCore

// Property-based tests of the wire codec (control messages, job envelopes, stream events), the JSON
// parser and the OpenAI request validators: arbitrary bytes and arbitrary field values go through
// every decoder; nothing may trap, what decodes must lie within `WireLimits`, and
// `decode(encode(x)) == x` for every in-range value.
//
// The generators below are hand-written closures over PropertyBased's seeded RNG (no shrinking:
// inputs are structured, and a failure prints the input and the seed that reproduces it).
// PropertyBased's `.fixedSeed` trait runs a single case and always records an issue, so it is only
// for reproducing a reported failure, never committed.

private typealias RNG = any SeededRandomNumberGenerator
private typealias L = WireLimits

// MARK: - Random helpers

private func roll(_ n: Int, _ rng: inout RNG) -> Int { Int.random(in: 0..<n, using: &rng) }
private func chance(_ p: Double, _ rng: inout RNG) -> Bool { Double.random(in: 0..<1, using: &rng) < p }
private func pick<T>(_ xs: [T], _ rng: inout RNG) -> T { xs[roll(xs.count, &rng)] }

/// A value of `r`, often one of its edges.
private func edgy(_ r: ClosedRange<Int>, _ rng: inout RNG) -> Int {
    let span = r.upperBound - r.lowerBound   // every range used here is far from overflowing
    switch roll(8, &rng) {
    case 0: return r.lowerBound
    case 1: return r.upperBound
    case 2: return r.lowerBound + min(span, 1)
    case 3: return r.upperBound - min(span, 1)
    case 4: return r.lowerBound + Int.random(in: 0...min(span, 16), using: &rng)
    default: return Int.random(in: r, using: &rng)
    }
}

private let timeRange = Int(L.timesMs.lowerBound)...Int(L.timesMs.upperBound)
private func edgyTime(_ rng: inout RNG) -> Int64 { Int64(edgy(timeRange, &rng)) }

/// A value outside `r`: just outside either edge, -1, Int.min, Int.max, or anything beyond.
private func outside(_ r: ClosedRange<Int>, _ rng: inout RNG) -> Int {
    var c: [Int] = []
    if r.lowerBound > Int.min {
        c += [Int.min, r.lowerBound - 1, Int.random(in: Int.min...(r.lowerBound - 1), using: &rng)]
        if !r.contains(-1), r.upperBound < -1 || r.lowerBound > -1 { c.append(-1) }
    }
    if r.upperBound < Int.max {
        c += [Int.max, r.upperBound + 1, Int.random(in: (r.upperBound + 1)...Int.max, using: &rng)]
    }
    return pick(c, &rng)
}
private func outsideTime(_ rng: inout RNG) -> Int64 { Int64(outside(timeRange, &rng)) }

private func randomBytes(_ n: Int, _ rng: inout RNG) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(n)
    while out.count < n {
        var x = rng.next()
        for _ in 0..<min(8, n - out.count) { out.append(UInt8(truncatingIfNeeded: x)); x >>= 8 }
    }
    return out
}

private func hex(_ b: [UInt8], limit: Int = 96) -> String {
    let s = Formatting.hex(b.prefix(limit))
    return b.count > limit ? s + "…(\(b.count) bytes)" : s
}

/// Pieces of text: ASCII, JSON-special characters, controls, combining marks, CJK, emoji (incl. ZWJ
/// sequences and flags), BOM, the last scalar.
private let atoms: [String] = [
    "a", "Z", "0", " ", "x", "-", "_", "/", ":", "\"", "\\", "\n", "\t", "\r", "\u{0}", "\u{1}", "\u{1F}", "\u{7F}",
    "é", "e\u{301}", "ß", "Ω", "漢", "字", "中文", "日本語", "한국어", "👋", "🇫🇷", "👨‍👩‍👧", "😀", "𝄞",
    "\u{FEFF}", "\u{FFFD}", "\u{2028}", "\u{10FFFF}", "\u{E000}",
]

/// A string of at most `maxBytes` UTF-8 bytes, sometimes exactly `maxBytes`.
private func text(_ maxBytes: Int, _ rng: inout RNG, small: Bool = false) -> String {
    let cap = small ? min(maxBytes, 24) : maxBytes
    let target: Int
    switch roll(10, &rng) {
    case 0: target = 0
    case 1: target = cap
    case 2: target = Int.random(in: 0...cap, using: &rng)
    default: target = Int.random(in: 0...min(cap, 24), using: &rng)
    }
    var s = ""
    var n = 0
    while n < target {
        let a = pick(atoms, &rng)
        let k = a.utf8.count
        if n + k > target { s += String(repeating: "x", count: target - n); break }
        s += a
        n += k
    }
    return s
}

/// A string just over `bound` bytes — several of them with fewer than `bound` characters.
private func overText(_ bound: Int, _ rng: inout RNG) -> String {
    switch roll(5, &rng) {
    case 0: return String(repeating: "x", count: bound + 1)
    case 1: return String(repeating: "漢", count: bound / 3 + 1)
    case 2: return String(repeating: "👋", count: bound / 4 + 1)
    case 3: return String(repeating: "a", count: bound - 1) + "é"
    default: return String(repeating: "y", count: bound + Int.random(in: 1...64, using: &rng))
    }
}

private func fits(_ s: String, _ n: Int) -> Bool { s.utf8.count <= n }

// MARK: - Wire value generators

private func genInfo(_ rng: inout RNG, small: Bool) -> WorkerInfo {
    let slots = edgy(L.slots, &rng)
    let free = edgy(0...slots, &rng)
    let modelCount = !small && chance(0.03, &rng) ? L.maxModels : Int.random(in: 0...3, using: &rng)
    let capCount = !small && chance(0.1, &rng) ? L.maxCapabilities : Int.random(in: 0...3, using: &rng)
    let models = (0..<modelCount).map { _ in text(modelCount > 8 ? 8 : L.maxNameBytes, &rng, small: small) }
    let caps = (0..<capCount).map { _ in text(L.maxNameBytes, &rng, small: small) }
    return WorkerInfo(id: text(L.maxIDBytes, &rng, small: small), slots: slots, freeSlots: free, models: models,
                      capabilities: caps, engine: text(L.maxNameBytes, &rng, small: small),
                      host: text(L.maxNameBytes, &rng, small: small), pid: edgy(0...Int(Int32.max), &rng),
                      joinKey: text(L.maxIDBytes, &rng, small: small))
}

private func genReport(_ rng: inout RNG, small: Bool) -> JobReport {
    JobReport(requestId: text(L.maxIDBytes, &rng, small: small), attempt: edgy(L.attempts, &rng),
              outcome: text(L.maxNameBytes, &rng, small: small), firstTokenAtMs: edgyTime(&rng), finishedAtMs: edgyTime(&rng),
              promptTokens: edgy(L.tokens, &rng), completionTokens: edgy(L.tokens, &rng), returnsCredit: chance(0.5, &rng))
}

private func genWorker(_ rng: inout RNG, small: Bool = false) -> WorkerMessage {
    switch roll(12, &rng) {
    case 0: return .hello(genInfo(&rng, small: small))
    case 7: return .modelRequest(name: text(L.maxNameBytes, &rng, small: small), joinKey: text(L.maxIDBytes, &rng, small: small))
    case 9: return .adopt(ticket: randomBytes(small ? Int.random(in: 0...16, using: &rng) : edgy(0...L.maxTicketBytes, &rng), &rng),
                          started: chance(0.5, &rng))
    case 10: return .moved(requestId: text(L.maxIDBytes, &rng, small: small))
    case 11: return .reclaim(edgy(L.slots, &rng))
    case 1: return .credit(edgy(L.slots, &rng))
    case 2: return .heartbeat(active: edgy(0...L.slots.upperBound, &rng))
    case 3: return .started(requestId: text(L.maxIDBytes, &rng, small: small))
    case 4: return .done(genReport(&rng, small: small))
    case 5: return .draining
    case 6: return .bye
    default:
        let n = !small && chance(0.02, &rng) ? L.maxPrefixHashes : Int.random(in: 0...6, using: &rng)
        return .prefixes((0..<n).map { _ in chance(0.2, &rng) ? pick([0, UInt64.max, 1], &rng) : rng.next() })
    }
}

private let kinds: [JobEnvelope.Kind] = [.chatCompletion, .embeddings, .rerank, .textCompletion]

private func genEnvelope(_ rng: inout RNG, small: Bool = false) -> JobEnvelope {
    let payloadCount = small ? Int.random(in: 0...16, using: &rng)
        : chance(0.05, &rng) ? Int.random(in: 0...65_536, using: &rng) : Int.random(in: 0...256, using: &rng)
    return JobEnvelope(requestId: text(L.maxIDBytes, &rng, small: small), replyTo: text(L.maxIDBytes, &rng, small: small),
                       attempt: edgy(L.attempts, &rng), kind: pick(kinds, &rng), tier: text(L.maxNameBytes, &rng, small: small),
                       project: text(L.maxNameBytes, &rng, small: small), fleet: pick(EndpointFleet.allCases, &rng), endpoint: text(L.maxNameBytes, &rng, small: small),
                       model: text(L.maxNameBytes, &rng, small: small), acceptedAtMs: edgyTime(&rng), queueDeadlineMs: edgyTime(&rng),
                       requestDeadlineMs: edgyTime(&rng),
                       prefixBlocks: (0..<(chance(0.5, &rng) ? 0 : small ? edgy(0...8, &rng) : edgy(0...L.maxPrefixBlocks, &rng))).map { _ in rng.next() },
                       sloTTFTMs: edgy(L.sloMs, &rng), sloTPOTMs: edgy(L.sloMs, &rng),
                       billing: chance(0.5, &rng) ? Billing(keyHash: text(L.maxIDBytes, &rng, small: small), reservedTokens: edgy(L.tokens, &rng),
                                                            batchId: text(L.maxIDBytes, &rng, small: small)) : nil,
                       replay: chance(0.2, &rng) ? JobEnvelope.Replay(fromSeq: edgy(L.seqs, &rng),
                           tokens: (0..<Int.random(in: 0...(small ? 3 : 50), using: &rng)).map { _ in Int32(truncatingIfNeeded: rng.next()) }) : nil,
                       payload: randomBytes(payloadCount, &rng))
}

private func genRouter(_ rng: inout RNG, small: Bool = false) -> RouterMessage {
    switch roll(11, &rng) {
    case 0: return .job(genEnvelope(&rng, small: small),
                        ticket: randomBytes(small ? Int.random(in: 0...16, using: &rng) : edgy(0...L.maxTicketBytes, &rng), &rng))
    case 6: return .ack(routerId: text(L.maxIDBytes, &rng, small: small), demand: edgy(0...L.slots.upperBound, &rng))
    case 7: return .returned(edgy(0...L.slots.upperBound, &rng))
    case 8: return .adopted(requestId: text(L.maxIDBytes, &rng, small: small))
    case 9: return .adoptRefused(requestId: text(L.maxIDBytes, &rng, small: small))
    case 10: return .relocate((0..<Int.random(in: 0...(small ? 3 : 20), using: &rng)).map { _ in text(L.maxIDBytes, &rng, small: small) })
    case 1: return .cancel(requestId: text(L.maxIDBytes, &rng, small: small))
    case 2: return .identify
    case 3: return .modelGrant(name: text(L.maxNameBytes, &rng, small: small), token: text(L.maxIDBytes, &rng, small: small),
                               sha256: text(64, &rng, small: small), bytes: edgy(1...(1 << 40), &rng))
    case 4: return .modelRefused(name: text(L.maxNameBytes, &rng, small: small), reason: text(L.maxTextBytes, &rng, small: small))
    default: return .refused(text(L.maxTextBytes, &rng, small: small))
    }
}

private func genGateway(_ rng: inout RNG, small: Bool = false) -> GatewayMessage {
    switch roll(5, &rng) {
    case 0: return .submit(genEnvelope(&rng, small: small))
    case 1: return .cancel(requestId: text(L.maxIDBytes, &rng, small: small))
    case 2: return .relocate((0..<Int.random(in: 0...(small ? 3 : 20), using: &rng)).map { _ in text(L.maxIDBytes, &rng, small: small) })
    case 3: return .resume(requestId: text(L.maxIDBytes, &rng, small: small), fromSeq: edgy(L.seqs, &rng),
                           tokens: (0..<Int.random(in: 0...(small ? 3 : 40), using: &rng)).map { _ in Int32(truncatingIfNeeded: rng.next()) })
    default: return .alive(gatewayId: text(L.maxIDBytes, &rng, small: small))
    }
}

private let choiceRange = L.choices.lowerBound...(L.choices.upperBound - 1)
private let toolRange = L.toolIndices.lowerBound...(L.toolIndices.upperBound - 1)

private func genError(_ rng: inout RNG, small: Bool, status: Int? = nil) -> APIError {
    APIError(status: status ?? edgy(L.errorStatuses, &rng), message: text(L.maxTextBytes, &rng, small: small),
             type: text(L.maxNameBytes, &rng, small: small),
             param: chance(0.5, &rng) ? text(L.maxNameBytes, &rng, small: small) : nil,
             code: chance(0.5, &rng) ? text(L.maxNameBytes, &rng, small: small) : nil)
}

private func genBody(_ rng: inout RNG, small: Bool) -> StreamEvent.Body {
    switch roll(9, &rng) {
    case 8: return .placed(predictedTTFTMs: edgy(-1...L.sloMs.upperBound, &rng), predictedTPOTMs: edgy(-1...L.sloMs.upperBound, &rng))
    case 7: return .lost(genError(&rng, small: small))
    case 0: return .delta(index: edgy(choiceRange, &rng), text: text(4096, &rng, small: small), logprobs: nil,
                          tokens: (0..<Int.random(in: 0...(small ? 3 : 40), using: &rng)).map { _ in Int32(truncatingIfNeeded: rng.next()) })
    case 1: return .delta(index: edgy(choiceRange, &rng), text: text(4096, &rng, small: small), logprobs: text(4096, &rng, small: small))
    case 2:
        return .toolCall(index: edgy(choiceRange, &rng), toolIndex: edgy(toolRange, &rng), id: text(L.maxIDBytes, &rng, small: small),
                         name: text(L.maxNameBytes, &rng, small: small), arguments: text(4096, &rng, small: small))
    case 3:
        let dim = small ? Int.random(in: 1...4, using: &rng) : edgy(L.dims, &rng)
        let count = small ? Int.random(in: 0...2, using: &rng) : Int.random(in: 0...(dim > 1024 ? 1 : 3), using: &rng)
        return .vectors(dim: dim, data: randomBytes(4 * dim * count, &rng))
    case 4: return .finish(index: edgy(choiceRange, &rng), reason: text(L.maxNameBytes, &rng, small: small))
    case 5: return .done(Usage(promptTokens: edgy(L.tokens, &rng), completionTokens: edgy(L.tokens, &rng), cachedTokens: edgy(L.tokens, &rng)))
    default: return .error(genError(&rng, small: small))
    }
}

private func genEvent(_ rng: inout RNG, small: Bool = false) -> StreamEvent {
    StreamEvent(requestId: text(L.maxIDBytes, &rng, small: small), attempt: edgy(0...L.attempts.upperBound, &rng),
                seq: edgy(L.seqs, &rng), body: genBody(&rng, small: small))
}

// MARK: - Independent statements of the wire ranges

private func inLimits(_ e: JobEnvelope) -> Bool {
    fits(e.requestId, L.maxIDBytes) && fits(e.replyTo, L.maxIDBytes) && L.attempts.contains(e.attempt)
        && [e.tier, e.project, e.endpoint, e.model].allSatisfy { fits($0, L.maxNameBytes) }
        && [e.acceptedAtMs, e.queueDeadlineMs, e.requestDeadlineMs].allSatisfy { L.timesMs.contains($0) }
        && e.prefixBlocks.count <= L.maxPrefixBlocks && L.sloMs.contains(e.sloTTFTMs) && L.sloMs.contains(e.sloTPOTMs)
        && e.payload.count <= L.maxPayloadBytes && EndpointFleet.allCases.contains(e.fleet)
        && (e.billing.map { fits($0.keyHash, L.maxIDBytes) && L.tokens.contains($0.reservedTokens) && fits($0.batchId, L.maxIDBytes) } ?? true)
        && (e.replay.map { L.seqs.contains($0.fromSeq) && $0.tokens.count <= L.maxReplayTokens } ?? true)
}

/// The wire codec as the properties see it.
private protocol WireCodable: Equatable, Sendable {
    static func decode(_ bytes: [UInt8]) throws -> Self
    func encode() -> [UInt8]
    /// Every field lies in its `WireLimits` range.
    var propInLimits: Bool { get }
    /// Whether `encode()` gives back the exact bytes this value was decoded from (false only where
    /// decoding normalises: an error status other than 400…599 becomes 502).
    var propCanonical: Bool { get }
}

extension WorkerMessage: WireCodable {
    var propInLimits: Bool {
        switch self {
        case let .hello(i):
            return fits(i.id, L.maxIDBytes) && L.slots.contains(i.slots) && (0...i.slots).contains(i.freeSlots)
                && i.models.count <= L.maxModels && i.models.allSatisfy { fits($0, L.maxNameBytes) }
                && i.capabilities.count <= L.maxCapabilities && i.capabilities.allSatisfy { fits($0, L.maxNameBytes) }
                && fits(i.engine, L.maxNameBytes) && fits(i.host, L.maxNameBytes) && (0...Int(Int32.max)).contains(i.pid)
                && fits(i.joinKey, L.maxIDBytes)
        case let .credit(n): return L.slots.contains(n)
        case let .heartbeat(a): return (0...L.slots.upperBound).contains(a)
        case let .started(id): return fits(id, L.maxIDBytes)
        case let .done(r):
            return fits(r.requestId, L.maxIDBytes) && L.attempts.contains(r.attempt) && fits(r.outcome, L.maxNameBytes)
                && L.timesMs.contains(r.firstTokenAtMs) && L.timesMs.contains(r.finishedAtMs)
                && L.tokens.contains(r.promptTokens) && L.tokens.contains(r.completionTokens)
        case .draining, .bye: return true
        case let .prefixes(h): return h.count <= L.maxPrefixHashes
        case let .modelRequest(name, joinKey): return fits(name, L.maxNameBytes) && fits(joinKey, L.maxIDBytes)
        case let .adopt(ticket, _): return ticket.count <= L.maxTicketBytes
        case let .moved(id): return fits(id, L.maxIDBytes)
        case let .reclaim(n): return L.slots.contains(n)
        }
    }
    var propCanonical: Bool { true }
}

extension JobEnvelope: WireCodable {
    var propInLimits: Bool { inLimits(self) }
    var propCanonical: Bool { true }
}

extension RouterMessage: WireCodable {
    var propInLimits: Bool {
        switch self {
        case let .job(e, ticket): return inLimits(e) && ticket.count <= L.maxTicketBytes
        case let .cancel(id): return fits(id, L.maxIDBytes)
        case .identify: return true
        case let .ack(router, demand): return fits(router, L.maxIDBytes) && (0...L.slots.upperBound).contains(demand)
        case let .returned(n): return (0...L.slots.upperBound).contains(n)
        case let .adopted(id), let .adoptRefused(id): return fits(id, L.maxIDBytes)
        case let .relocate(ids): return ids.count <= L.maxRelocateIds && ids.allSatisfy { fits($0, L.maxIDBytes) }
        case let .refused(why): return fits(why, L.maxTextBytes)
        case let .modelGrant(name, token, sha, bytes):
            return fits(name, L.maxNameBytes) && fits(token, L.maxIDBytes) && fits(sha, 64) && (1...(1 << 40)).contains(bytes)
        case let .modelRefused(name, reason): return fits(name, L.maxNameBytes) && fits(reason, L.maxTextBytes)
        }
    }
    var propCanonical: Bool { true }
}

extension GatewayMessage: WireCodable {
    var propInLimits: Bool {
        switch self {
        case let .submit(e): return inLimits(e)
        case let .cancel(id): return fits(id, L.maxIDBytes)
        case let .alive(id): return fits(id, L.maxIDBytes)
        case let .relocate(ids): return ids.count <= L.maxRelocateIds && ids.allSatisfy { fits($0, L.maxIDBytes) }
        case let .resume(id, from, tokens): return fits(id, L.maxIDBytes) && L.seqs.contains(from) && tokens.count <= L.maxReplayTokens
        }
    }
    var propCanonical: Bool { true }
}

extension StreamEvent: WireCodable {
    var propInLimits: Bool {
        guard fits(requestId, L.maxIDBytes), (0...L.attempts.upperBound).contains(attempt), L.seqs.contains(seq) else { return false }
        switch body {
        case let .delta(i, _, _, tokens): return L.choices.contains(i) && tokens.count <= L.maxTokensPerDelta
        case let .lost(e):
            return L.errorStatuses.contains(e.status) && fits(e.message, L.maxTextBytes) && fits(e.type, L.maxNameBytes)
                && fits(e.param ?? "", L.maxNameBytes) && fits(e.code ?? "", L.maxNameBytes) && e.headers.isEmpty
        case let .toolCall(i, t, id, name, _):
            return L.choices.contains(i) && L.toolIndices.contains(t) && fits(id, L.maxIDBytes) && fits(name, L.maxNameBytes)
        case let .vectors(dim, data): return L.dims.contains(dim) && data.count <= L.maxVectorBytes && data.count % (4 * dim) == 0
        case let .finish(i, reason): return L.choices.contains(i) && fits(reason, L.maxNameBytes)
        case let .done(u): return [u.promptTokens, u.completionTokens, u.cachedTokens].allSatisfy { L.tokens.contains($0) }
        case let .placed(ttft, tpot): return [ttft, tpot].allSatisfy { (-1...L.sloMs.upperBound).contains($0) }
        case let .error(e):
            return L.errorStatuses.contains(e.status) && fits(e.message, L.maxTextBytes) && fits(e.type, L.maxNameBytes)
                && fits(e.param ?? "", L.maxNameBytes) && fits(e.code ?? "", L.maxNameBytes) && e.headers.isEmpty
        }
    }
    var propCanonical: Bool {
        if case let .error(e) = body, e.status == L.mappedStatus { return false }   // maybe clamped from something else
        if case let .lost(e) = body, e.status == L.mappedStatus { return false }
        return true
    }
}

/// Decodes `bytes` as a `T`. A decoder may only throw `WireError`; what it returns must be in range,
/// re-encode to the same bytes (unless normalised) and decode again to the same value.
@discardableResult
private func checkDecode<T: WireCodable>(_: T.Type, _ bytes: [UInt8]) -> T? {
    let v: T
    do { v = try T.decode(bytes) } catch is WireError { return nil } catch {
        Issue.record("\(T.self).decode threw \(type(of: error)), not WireError, for \(hex(bytes))")
        return nil
    }
    #expect(v.propInLimits, "\(T.self) decoded out of WireLimits from \(hex(bytes)): \(v)")
    let again = v.encode()
    if v.propCanonical { #expect(again == bytes, "\(T.self) re-encodes differently: \(hex(bytes)) → \(hex(again))") }
    do { #expect(try T.decode(again) == v, "\(T.self) re-decodes differently from \(hex(bytes))") } catch {
        Issue.record("\(T.self) re-encoding of a decoded value does not decode: \(error); input \(hex(bytes))")
    }
    return v
}

/// A wire value with the single-byte mutations and cuts to try on its encoding.
private struct Mutated<T: WireCodable>: Sendable, CustomStringConvertible {
    let value: T
    let bytes: [UInt8]
    let mutations: [Mutation]
    struct Mutation: Sendable { let at: Int; let byte: UInt8 }
    var description: String { "\(value) = \(hex(bytes))" }
}

private func mutated<T: WireCodable>(_ value: T, _ rng: inout RNG) -> Mutated<T> {
    let bytes = value.encode()
    let positions = bytes.count <= 64 ? Array(0..<bytes.count) : Array(0..<32) + (0..<48).map { _ in Int.random(in: 32..<bytes.count, using: &rng) }
    var muts: [Mutated<T>.Mutation] = []
    for p in positions {
        let orig = bytes[p]
        // One interesting replacement (0, 1, 0xFF, ±1, bit flip) and one random.
        let special = pick([0, 1, 0x7F, 0x80, 0xFF, orig &+ 1, orig &- 1, orig ^ 0x80], &rng)
        let b = chance(0.5, &rng) ? special : UInt8.random(in: 0...255, using: &rng)
        if b != orig { muts.append(.init(at: p, byte: b)) }
    }
    return Mutated(value: value, bytes: bytes, mutations: muts)
}

/// Every cut if the encoding is short, else the first and last 256 and a sample in between.
private func cuts(_ count: Int) -> [Int] {
    if count <= 256 { return Array(0..<count) }
    return Array(0..<64) + stride(from: 64, to: count - 64, by: max(1, (count - 128) / 128)) + Array((count - 64)..<count)
}

private func checkMutations<T: WireCodable>(_ m: Mutated<T>) {
    // Every proper prefix is refused: the encoding is self-delimiting.
    for cut in cuts(m.bytes.count) {
        #expect(throws: WireError.self, "\(T.self) cut at \(cut) of \(hex(m.bytes))") { try T.decode(Array(m.bytes[0..<cut])) }
    }
    // Trailing bytes are refused.
    #expect(throws: WireError.self, "\(T.self) with a trailing byte: \(hex(m.bytes))") { try T.decode(m.bytes + [0]) }
    // Any single-byte change either decodes to something in range and canonical, or throws WireError.
    var b = m.bytes
    for mut in m.mutations {
        let orig = b[mut.at]
        b[mut.at] = mut.byte
        checkDecode(T.self, b)
        b[mut.at] = orig
    }
}

// MARK: - Out-of-range encodings

/// Bytes made by the normal encoder from a value with one field out of range.
private struct Bad: Sendable, CustomStringConvertible {
    let label: String
    let bytes: [UInt8]
    var description: String { "\(label): \(hex(bytes))" }
}

private func badInfo(_ rng: inout RNG) -> (String, WorkerInfo) {
    var i = genInfo(&rng, small: true)
    switch roll(12, &rng) {
    case 0: i.slots = outside(L.slots, &rng); i.freeSlots = 0; return ("slots \(i.slots)", i)
    case 1: i.freeSlots = outside(0...i.slots, &rng); return ("free slots \(i.freeSlots) of \(i.slots)", i)
    case 2: i.pid = outside(0...Int(Int32.max), &rng); return ("pid \(i.pid)", i)
    case 3: i.models = Array(repeating: "m", count: L.maxModels + 1); return ("1025 models", i)
    case 4: i.capabilities = Array(repeating: "chat", count: L.maxCapabilities + 1); return ("17 capabilities", i)
    case 5: i.id = overText(L.maxIDBytes, &rng); return ("worker id over bound", i)
    case 6: i.models.insert(overText(L.maxNameBytes, &rng), at: Int.random(in: 0...i.models.count, using: &rng)); return ("model over bound", i)
    case 7: i.capabilities.insert(overText(L.maxNameBytes, &rng), at: 0); return ("capability over bound", i)
    case 8: i.engine = overText(L.maxNameBytes, &rng); return ("engine over bound", i)
    case 9: i.host = overText(L.maxNameBytes, &rng); return ("host over bound", i)
    case 10: i.joinKey = overText(L.maxIDBytes, &rng); return ("join key over bound", i)
    default: i.slots = 0; i.freeSlots = 0; return ("zero slots", i)
    }
}

private func badReport(_ rng: inout RNG) -> (String, JobReport) {
    var r = genReport(&rng, small: true)
    switch roll(7, &rng) {
    case 0: r.requestId = overText(L.maxIDBytes, &rng); return ("request id over bound", r)
    case 1: r.attempt = outside(L.attempts, &rng); return ("attempt \(r.attempt)", r)
    case 2: r.outcome = overText(L.maxNameBytes, &rng); return ("outcome over bound", r)
    case 3: r.firstTokenAtMs = outsideTime(&rng); return ("first token at \(r.firstTokenAtMs)", r)
    case 4: r.finishedAtMs = outsideTime(&rng); return ("finished at \(r.finishedAtMs)", r)
    case 5: r.promptTokens = outside(L.tokens, &rng); return ("prompt tokens \(r.promptTokens)", r)
    default: r.completionTokens = outside(L.tokens, &rng); return ("completion tokens \(r.completionTokens)", r)
    }
}

private func badWorker(_ rng: inout RNG) -> Bad {
    switch roll(7, &rng) {
    case 0: let (l, i) = badInfo(&rng); return Bad(label: "hello " + l, bytes: WorkerMessage.hello(i).encode())
    case 1: let n = outside(L.slots, &rng); return Bad(label: "credit \(n)", bytes: WorkerMessage.credit(n).encode())
    case 2: let n = outside(0...L.slots.upperBound, &rng); return Bad(label: "heartbeat \(n)", bytes: WorkerMessage.heartbeat(active: n).encode())
    case 3: return Bad(label: "started id over bound", bytes: WorkerMessage.started(requestId: overText(L.maxIDBytes, &rng)).encode())
    case 4: let (l, r) = badReport(&rng); return Bad(label: "done " + l, bytes: WorkerMessage.done(r).encode())
    case 5:
        return Bad(label: "65537 prefix hashes", bytes: WorkerMessage.prefixes(Array(repeating: 7, count: L.maxPrefixHashes + 1)).encode())
    default:
        // The encoder cannot write a negative count; write it by hand, followed by a few hashes.
        let n = outside(0...L.maxPrefixHashes, &rng)
        var w = WireWriter()
        w.u8(WorkerMessage.wireKind); w.u8(wireVersion); w.u8(8); w.int(n)
        for _ in 0..<Int.random(in: 0...3, using: &rng) { w.u64(rng.next()) }
        return Bad(label: "prefix hash count \(n)", bytes: w.bytes)
    }
}

private func badEnvelope(_ rng: inout RNG) -> Bad {
    var e = genEnvelope(&rng, small: true)
    let label: String
    switch roll(16, &rng) {
    case 0: e.requestId = overText(L.maxIDBytes, &rng); label = "request id over bound"
    case 1: e.replyTo = overText(L.maxIDBytes, &rng); label = "reply-to over bound"
    case 2: e.attempt = outside(L.attempts, &rng); label = "attempt \(e.attempt)"
    case 3: e.tier = overText(L.maxNameBytes, &rng); label = "tier over bound"
    case 4: e.project = overText(L.maxNameBytes, &rng); label = "project over bound"
    case 5: e.endpoint = overText(L.maxNameBytes, &rng); label = "endpoint over bound"
    case 6: e.model = overText(L.maxNameBytes, &rng); label = "model over bound"
    case 7: e.acceptedAtMs = outsideTime(&rng); label = "accepted at \(e.acceptedAtMs)"
    case 8: e.queueDeadlineMs = outsideTime(&rng); label = "queue deadline \(e.queueDeadlineMs)"
    case 9: e.requestDeadlineMs = outsideTime(&rng); label = "request deadline \(e.requestDeadlineMs)"
    case 10: e.prefixBlocks = (0...L.maxPrefixBlocks).map { UInt64($0) }; label = "\(e.prefixBlocks.count) prefix blocks"
    case 11: e.sloTTFTMs = outside(L.sloMs, &rng); label = "SLO TTFT \(e.sloTTFTMs)"
    case 12: e.sloTPOTMs = outside(L.sloMs, &rng); label = "SLO TPOT \(e.sloTPOTMs)"
    case 13:
        // The fleet byte sits after the project.
        var bytes = e.encode()
        let at = 2 + 4 + e.requestId.utf8.count + 4 + e.replyTo.utf8.count + 8 + 1 + 4 + e.tier.utf8.count + 4 + e.project.utf8.count
        let f = pick([0, 4, 5, 0x7F, 0xFF, UInt8.random(in: 4...255, using: &rng)], &rng)
        bytes[at] = f
        return Bad(label: "fleet byte \(f)", bytes: bytes)
    default:
        // The kind byte sits after the header, two strings and the attempt.
        var bytes = e.encode()
        let at = 2 + 4 + e.requestId.utf8.count + 4 + e.replyTo.utf8.count + 8
        let k = pick([0, 5, 6, 0x7F, 0xFF, UInt8.random(in: 5...255, using: &rng)], &rng)
        bytes[at] = k
        return Bad(label: "kind byte \(k)", bytes: bytes)
    }
    return Bad(label: label, bytes: e.encode())
}

private func badRouter(_ rng: inout RNG) -> Bad {
    switch roll(3, &rng) {
    case 0: let b = badEnvelope(&rng); return Bad(label: "job " + b.label, bytes: [RouterMessage.wireKind, wireVersion, 1] + b.bytes)
    case 1: return Bad(label: "cancel id over bound", bytes: RouterMessage.cancel(requestId: overText(L.maxIDBytes, &rng)).encode())
    default: return Bad(label: "refused reason over bound", bytes: RouterMessage.refused(overText(L.maxTextBytes, &rng)).encode())
    }
}

private func badGateway(_ rng: inout RNG) -> Bad {
    if chance(0.75, &rng) {
        let b = badEnvelope(&rng)
        return Bad(label: "submit " + b.label, bytes: [GatewayMessage.wireKind, wireVersion, 1] + b.bytes)
    }
    return Bad(label: "cancel id over bound", bytes: GatewayMessage.cancel(requestId: overText(L.maxIDBytes, &rng)).encode())
}

private func badEvent(_ rng: inout RNG) -> Bad {
    var e = genEvent(&rng, small: true)
    let label: String
    switch roll(19, &rng) {
    case 0: e.requestId = overText(L.maxIDBytes, &rng); label = "request id over bound"
    case 1: e.attempt = outside(0...L.attempts.upperBound, &rng); label = "attempt \(e.attempt)"
    case 2: e.seq = outside(L.seqs, &rng); label = "seq \(e.seq)"
    case 3:
        let i = outside(choiceRange, &rng)
        e.body = .delta(index: i, text: "t", logprobs: chance(0.5, &rng) ? "{}" : nil); label = "delta choice \(i)"
    case 4: let i = outside(choiceRange, &rng); e.body = .finish(index: i, reason: "stop"); label = "finish choice \(i)"
    case 5: e.body = .finish(index: 0, reason: overText(L.maxNameBytes, &rng)); label = "finish reason over bound"
    case 6:
        let i = outside(choiceRange, &rng)
        e.body = .toolCall(index: i, toolIndex: 0, id: "c", name: "f", arguments: "{}"); label = "tool call choice \(i)"
    case 7:
        let t = outside(toolRange, &rng)
        e.body = .toolCall(index: 0, toolIndex: t, id: "c", name: "f", arguments: "{}"); label = "tool index \(t)"
    case 8: e.body = .toolCall(index: 0, toolIndex: 0, id: overText(L.maxIDBytes, &rng), name: "f", arguments: ""); label = "tool call id over bound"
    case 9: e.body = .toolCall(index: 0, toolIndex: 0, id: "c", name: overText(L.maxNameBytes, &rng), arguments: ""); label = "tool name over bound"
    case 10:
        let d = outside(L.dims, &rng)
        e.body = .vectors(dim: d, data: randomBytes(4 * Int.random(in: 0...2, using: &rng), &rng)); label = "dimension \(d)"
    case 11:
        let d = Int.random(in: 1...16, using: &rng)
        let n = 4 * d * Int.random(in: 0...2, using: &rng) + Int.random(in: 1..<(4 * d), using: &rng)
        e.body = .vectors(dim: d, data: randomBytes(n, &rng)); label = "\(n) vector bytes at dimension \(d)"
    case 12: let n = outside(L.tokens, &rng); e.body = .done(Usage(promptTokens: n, completionTokens: 0)); label = "prompt tokens \(n)"
    case 13: let n = outside(L.tokens, &rng); e.body = .done(Usage(promptTokens: 0, completionTokens: n)); label = "completion tokens \(n)"
    case 14: let n = outside(L.tokens, &rng); e.body = .done(Usage(promptTokens: 0, completionTokens: 0, cachedTokens: n)); label = "cached tokens \(n)"
    case 15: e.body = .error(APIError(status: 500, message: overText(L.maxTextBytes, &rng), type: "t")); label = "error message over bound"
    case 16: e.body = .error(APIError(status: 500, message: "m", type: overText(L.maxNameBytes, &rng))); label = "error type over bound"
    case 17: e.body = .error(APIError(status: 500, message: "m", type: "t", param: overText(L.maxNameBytes, &rng))); label = "error param over bound"
    default: e.body = .error(APIError(status: 500, message: "m", type: "t", code: overText(L.maxNameBytes, &rng))); label = "error code over bound"
    }
    return Bad(label: label, bytes: e.encode())
}

// MARK: - Arbitrary bytes that reach the bodies

private let headers: [[UInt8]] = {
    var h: [[UInt8]] = []
    for t in 0...9 { h.append([WorkerMessage.wireKind, wireVersion, UInt8(t)]) }
    for t in 0...5 { h.append([RouterMessage.wireKind, wireVersion, UInt8(t)]) }
    for t in 0...4 { h.append([GatewayMessage.wireKind, wireVersion, UInt8(t)]) }
    h.append([StreamEventBatch.wireKind, wireVersion])
    h.append([RouterMessage.wireKind, wireVersion, 1, JobEnvelope.wireKind, wireVersion])
    h.append([GatewayMessage.wireKind, wireVersion, 1, JobEnvelope.wireKind, wireVersion])
    h.append([JobEnvelope.wireKind, wireVersion])
    h.append([StreamEvent.wireKind, wireVersion])
    h.append([StreamEvent.wireKind, 0])
    h.append([StreamEvent.wireKind, wireVersion &+ 1])
    return h
}()

/// Arbitrary bytes: pure noise, or a valid header followed by noise made of wire-shaped pieces
/// (small lengths with their bytes, small or edge integers, 0/1 bytes) so decoding gets far.
private func arbitraryFrame(_ rng: inout RNG) -> [UInt8] {
    if chance(0.3, &rng) { return randomBytes(Int.random(in: 0...512, using: &rng), &rng) }
    var w = WireWriter()
    for b in pick(headers, &rng) { w.u8(b) }
    let target = Int.random(in: 0...512, using: &rng)
    while w.bytes.count < target {
        switch roll(7, &rng) {
        case 0: w.u8(UInt8.random(in: 0...255, using: &rng))
        case 1: w.u8(UInt8(roll(9, &rng)))
        case 2: w.string(text(16, &rng))
        case 3: w.u32(UInt32(roll(6, &rng))); for b in randomBytes(roll(6, &rng), &rng) { w.u8(b) }
        case 4: w.int(pick([0, 1, 2, 3, 4, 16, 17, 127, 128, 400, 502, 599, 600, 4096, 4097, -1, Int.min, Int.max, Int(Int32.max)], &rng))
        case 5: w.int(Int.random(in: -2...20, using: &rng))
        default: w.i64(Int64(edgy(timeRange, &rng)))
        }
    }
    return w.bytes
}

// MARK: - JSON generators

private let controlAtoms: [String] = (0..<0x20).map { String(Character(Unicode.Scalar(UInt8($0)))) }

private func jsonString(_ rng: inout RNG) -> String {
    var s = ""
    for _ in 0..<pick([0, 1, 2, 3, 5, 8, 16], &rng) { s += chance(0.25, &rng) ? pick(controlAtoms, &rng) : pick(atoms, &rng) }
    return s
}

/// A finite double. Half are dyadic fractions (exactly representable, non-integral); the rest edges
/// and arbitrary bit patterns — Swift prints the shortest text that reads back as the same double.
private func jsonDouble(_ rng: inout RNG) -> Double {
    switch roll(4, &rng) {
    case 0, 1:
        let m = Int.random(in: -(1 << 40)...(1 << 40), using: &rng) | 1   // odd: never integral after the division
        return Double(m) / Double(UInt64(1) << UInt64(Int.random(in: 1...40, using: &rng)))
    case 2:
        return pick([0.5, -0.5, 1.5, 0.1, -0.0, 1e300, -1e300, Double.leastNonzeroMagnitude, 2.2250738585072014e-308, Double.greatestFiniteMagnitude,
                     -Double.greatestFiniteMagnitude, 9e15, 1e16, 123456789.125, 1.0, 2.0, 1e-7, 1e21], &rng)
    default:
        while true {
            let d = Double(bitPattern: rng.next())
            if d.isFinite { return d }
        }
    }
}

private func jsonInt(_ rng: inout RNG) -> Int {
    chance(0.3, &rng) ? pick([Int.min, Int.max, 0, -1, 1, Int(Int32.max), Int(Int32.min), 1 << 53], &rng)
        : chance(0.5, &rng) ? Int.random(in: -1000...1000, using: &rng) : Int.random(in: Int.min...Int.max, using: &rng)
}

private func genJSON(_ depth: Int, _ rng: inout RNG) -> JSONValue {
    switch roll(depth <= 0 ? 5 : 8, &rng) {
    case 0: return .null
    case 1: return .bool(chance(0.5, &rng))
    case 2: return .int(jsonInt(&rng))
    case 3: return .double(jsonDouble(&rng))
    case 4: return .string(jsonString(&rng))
    case 5, 6:
        return .array((0..<pick([0, 1, 2, 3, 5], &rng)).map { _ in genJSON(depth - 1, &rng) })
    default:
        var o: [String: JSONValue] = [:]
        for _ in 0..<pick([0, 1, 2, 3, 5], &rng) { o[jsonString(&rng)] = genJSON(depth - 1, &rng) }
        return .object(o)
    }
}

private let hexDigits = Array("0123456789abcdef0123456789ABCDEF".utf8)

/// A second, independent JSON writer: random whitespace, `\u` escapes (surrogate pairs beyond the
/// BMP, either case of hex), short escapes including `\/`, exponents with `E`, any key order.
private func altEncode(_ v: JSONValue, _ rng: inout RNG, _ out: inout [UInt8]) {
    func ws(_ rng: inout RNG, _ out: inout [UInt8]) {
        for _ in 0..<pick([0, 0, 0, 1, 2], &rng) { out.append(pick([0x20, 0x09, 0x0A, 0x0D], &rng)) }
    }
    func hex4(_ v: UInt32, _ upper: Bool, _ out: inout [UInt8]) {
        out += [0x5C, UInt8(ascii: "u")]
        for shift in stride(from: 12, through: 0, by: -4) { out.append(hexDigits[Int((v >> UInt32(shift)) & 15) + (upper ? 16 : 0)]) }
    }
    func quote(_ s: String, _ rng: inout RNG, _ out: inout [UInt8]) {
        out.append(0x22)
        let shorts: [UInt32: Character] = [0x22: "\"", 0x5C: "\\", 0x2F: "/", 0x08: "b", 0x0C: "f", 0x0A: "n", 0x0D: "r", 0x09: "t"]
        for sc in s.unicodeScalars {
            let c = sc.value
            let mustEscape = c < 0x20 || c == 0x22 || c == 0x5C
            switch roll(3, &rng) {
            case 0 where !mustEscape: out += Array(sc.utf8)
            case 1 where shorts[c] != nil: out += [0x5C, shorts[c]!.asciiValue!]
            default:
                let upper = chance(0.5, &rng)
                if c >= 0x10000 {
                    hex4(0xD800 + ((c - 0x10000) >> 10), upper, &out); hex4(0xDC00 + ((c - 0x10000) & 0x3FF), upper, &out)
                } else { hex4(c, upper, &out) }
            }
        }
        out.append(0x22)
    }
    ws(&rng, &out)
    switch v {
    case .null: out += Array("null".utf8)
    case let .bool(b): out += Array((b ? "true" : "false").utf8)
    case let .int(i): out += Array(String(i).utf8)
    case let .double(d):
        let t = "\(d)"
        out += Array((chance(0.5, &rng) ? t.swapping("e", for: "E") : t).utf8)
    case let .string(s): quote(s, &rng, &out)
    case let .array(a):
        out.append(UInt8(ascii: "["))
        for (i, x) in a.enumerated() { if i > 0 { out.append(UInt8(ascii: ",")) }; altEncode(x, &rng, &out) }
        ws(&rng, &out)
        out.append(UInt8(ascii: "]"))
    case let .object(o):
        out.append(UInt8(ascii: "{"))
        for (i, k) in o.keys.shuffled(using: &rng).enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            ws(&rng, &out); quote(k, &rng, &out); ws(&rng, &out); out.append(UInt8(ascii: ":"))
            altEncode(o[k]!, &rng, &out)
        }
        ws(&rng, &out)
        out.append(UInt8(ascii: "}"))
    }
    ws(&rng, &out)
}

private extension String {
    func swapping(_ a: Character, for b: Character) -> String { String(map { $0 == a ? b : $0 }) }
}

private struct JSONCase: Sendable, CustomStringConvertible {
    let value: JSONValue
    let alt: [UInt8]
    var description: String { "\(value) / alt \(String(decoding: alt, as: UTF8.self))" }
}

private let jsonAlphabet = Array("{}[]\",:-+.0123456789eEtruefalsnl\\/ubfnrt \n\t\r".utf8) + [0x00, 0x1F, 0x7F, 0x80, 0xC3, 0xA9, 0xED, 0xA0, 0xF0, 0x9F, 0xFF]

/// Arbitrary bytes: noise, noise over a JSON alphabet, or a valid document with a few bytes changed.
private func arbitraryJSONBytes(_ rng: inout RNG) -> [UInt8] {
    switch roll(3, &rng) {
    case 0: return randomBytes(Int.random(in: 0...512, using: &rng), &rng)
    case 1: return (0..<Int.random(in: 0...256, using: &rng)).map { _ in pick(jsonAlphabet, &rng) }
    default:
        var out: [UInt8] = []
        altEncode(genJSON(3, &rng), &rng, &out)
        for _ in 0..<Int.random(in: 1...3, using: &rng) where !out.isEmpty {
            let at = Int.random(in: 0..<out.count, using: &rng)
            switch roll(3, &rng) {
            case 0: out[at] = pick(jsonAlphabet, &rng)
            case 1: out.remove(at: at)
            default: out.insert(pick(jsonAlphabet, &rng), at: at)
            }
        }
        return out
    }
}

private func checkParse(_ bytes: [UInt8]) {
    let v: JSONValue
    do { v = try JSONValue.parse(bytes) } catch {
        #expect(error.status == 400 && error.code == "invalid_json", "\(error) for \(hex(bytes))")
        return
    }
    do { #expect(try JSONValue.parse(v.encoded()) == v, "re-encoding of \(v) parses differently") } catch {
        Issue.record("re-encoding of \(v) does not parse: \(error)")
    }
}

// MARK: - Request generators

private let specialInts: [Int] = [
    Int.min, Int.min + 1, Int.max, Int.max - 1, -2, -1, 0, 1, 2, 19, 20, 21, 127, 128, 129, 999, 1000, 1001, 2048, 2049,
    8191, 8192, 8193, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, Int(Int32.max), Int(Int32.max) + 1, Int(Int32.min), 1 << 53,
]
private let specialDoubles: [Double] = [
    -0.0, 0.5, 1.0, 1.5, 2.0, 2.0000000000000004, 1.9999999999999998, -2.0, -2.0000000000000004, 0.9999999999999999,
    1.0000000000000002, 128.0, 129.0, 1000.0, 8192.0, 8193.0, 1_048_576.0, 1_048_577.0, 8.999999999999998e15, 9e15,
    -9e15, 9.007199254740992e15, 9.223372036854775807e18, -9.223372036854775808e18, 1.8446744073709552e19, 1e20,
    1e300, -1e300, Double.greatestFiniteMagnitude, -Double.greatestFiniteMagnitude, Double.leastNonzeroMagnitude, -Double.leastNonzeroMagnitude, 1e-300,
]
private let specialStrings: [String] = [
    "", "x", "m", "5", "1e3", "true", "null", "float", "base64", "none", "auto", "required", "text", "json_object",
    "json_schema", "function", "user", "assistant", "tool", "system", "👋", "\u{0}",
]
private let roles = ["system", "developer", "user", "assistant", "tool", "function", "bogus", "", "USER"]

private func wildNumber(_ rng: inout RNG) -> JSONValue {
    switch roll(4, &rng) {
    case 0: return .int(pick(specialInts, &rng))
    case 1: return .int(jsonInt(&rng))
    case 2: return .double(pick(specialDoubles, &rng))
    default: return .double(jsonDouble(&rng))
    }
}

private func wildMessage(_ rng: inout RNG) -> JSONValue {
    if chance(0.1, &rng) { return genJSON(1, &rng) }
    var m: [String: JSONValue] = [:]
    if chance(0.9, &rng) { m["role"] = chance(0.9, &rng) ? .string(pick(roles, &rng)) : genJSON(1, &rng) }
    switch roll(5, &rng) {
    case 0: break
    case 1: m["content"] = .string(jsonString(&rng))
    case 2:
        m["content"] = .array((0..<roll(3, &rng)).map { _ in
            chance(0.8, &rng) ? .object(["type": .string(pick(["text", "input_text", "image_url", ""], &rng)), "text": chance(0.8, &rng) ? .string("t") : genJSON(0, &rng)])
                : genJSON(1, &rng)
        })
    case 3: m["content"] = .null
    default: m["content"] = genJSON(1, &rng)
    }
    if chance(0.2, &rng) { m["name"] = chance(0.5, &rng) ? .string("n") : genJSON(0, &rng) }
    if chance(0.3, &rng) { m["tool_call_id"] = chance(0.7, &rng) ? .string("call_1") : genJSON(0, &rng) }
    if chance(0.2, &rng) { m["tool_calls"] = genJSON(2, &rng) }
    return .object(m)
}

private func tool(_ rng: inout RNG) -> JSONValue {
    if chance(0.2, &rng) { return genJSON(1, &rng) }
    let name: JSONValue = chance(0.8, &rng) ? .string(pick(["f", "g", ""], &rng)) : genJSON(0, &rng)
    return .object(["type": .string(chance(0.9, &rng) ? "function" : "other"), "function": .object(["name": name])])
}

/// Any JSON value, with extra weight on the edges the validators care about and on plausible shapes.
private func wild(_ key: String, _ rng: inout RNG) -> JSONValue {
    switch roll(10, &rng) {
    case 0, 1, 2: return wildNumber(&rng)
    case 3: return .string(pick(specialStrings, &rng))
    case 4: return .bool(chance(0.5, &rng))
    case 5: return .null
    case 6: return genJSON(2, &rng)
    default:
        switch key {
        case "messages": return .array((0..<pick([0, 1, 2, 3], &rng)).map { _ in wildMessage(&rng) })
        case "stream_options": return .object(["include_usage": chance(0.5, &rng) ? .bool(true) : genJSON(0, &rng)])
        case "response_format": return .object(["type": chance(0.7, &rng) ? .string(pick(specialStrings, &rng)) : genJSON(0, &rng)])
        case "tools": return .array((0..<roll(3, &rng)).map { _ in tool(&rng) })
        case "tool_choice":
            return chance(0.5, &rng) ? .string(pick(specialStrings, &rng))
                : .object(["type": .string("function"), "function": .object(["name": .string(pick(["f", "g", "h"], &rng))])])
        case "stop":
            return .array((0..<pick([0, 1, 4, 5], &rng)).map { _ in
                chance(0.9, &rng) ? .string(chance(0.05, &rng) ? String(repeating: "s", count: 1025) : jsonString(&rng)) : genJSON(0, &rng)
            })
        case "input":
            let n = chance(0.05, &rng) ? 2049 : pick([0, 1, 2, 3], &rng)
            switch roll(3, &rng) {
            case 0: return .array((0..<n).map { _ in .int(chance(0.8, &rng) ? Int.random(in: 0...50_000, using: &rng) : pick(specialInts, &rng)) })
            case 1: return .array((0..<n).map { _ in chance(0.8, &rng) ? .string(pick(["a", "", "👋"], &rng)) : genJSON(0, &rng) })
            default: return .array((0..<n).map { _ in .array((0..<roll(3, &rng)).map { _ in chance(0.8, &rng) ? .int(roll(100, &rng)) : wildNumber(&rng) }) })
            }
        case "documents":
            let n = chance(0.05, &rng) ? 1001 : pick([0, 1, 2, 3], &rng)
            return .array((0..<n).map { _ -> JSONValue in
                switch roll(4, &rng) {
                case 0: return .string(pick(["doc", "", "文書"], &rng))
                case 1: return .object(["text": .string(pick(["doc", ""], &rng))])
                case 2: return .object(["text": genJSON(0, &rng)])
                default: return genJSON(1, &rng)
                }
            })
        default: return wildNumber(&rng)
        }
    }
}

private let chatFields = ["model", "messages", "max_completion_tokens", "max_tokens", "temperature", "top_p", "top_k", "min_p", "n",
                          "stream", "stream_options", "stop", "seed", "presence_penalty", "frequency_penalty", "logprobs",
                          "top_logprobs", "user", "response_format", "tools", "tool_choice"]
private let embeddingsFields = ["model", "input", "encoding_format", "dimensions", "user"]
private let rerankFields = ["query", "documents", "top_n", "return_documents", "model"]

private struct RequestCase: Sendable, CustomStringConvertible {
    let body: [UInt8]
    var description: String { String(decoding: body, as: UTF8.self) }
}

/// A request object: usually valid required fields (so validation reaches the rest), each other
/// known field present with some probability and any value, sometimes an unknown field.
private func requestBody(_ fields: [String], required: [String: JSONValue], _ rng: inout RNG) -> RequestCase {
    var o: [String: JSONValue] = [:]
    for f in fields {
        if let ok = required[f], chance(0.85, &rng) { o[f] = ok; continue }
        if chance(0.35, &rng) { o[f] = wild(f, &rng) }
    }
    if chance(0.2, &rng) { o["extra_\(roll(3, &rng))"] = genJSON(2, &rng) }
    var bytes: [UInt8] = []
    if chance(0.5, &rng) { bytes = JSONValue.object(o).encoded() } else { altEncode(.object(o), &rng, &bytes) }
    return RequestCase(body: bytes)
}

private let userMessage: JSONValue = .array([.object(["role": .string("user"), "content": .string("hi")])])

/// A refused request names a known field (its first path component) and is a 400.
private func checkRefusal(_ e: APIError, _ fields: [String], _ body: [UInt8]) {
    let root = e.param.map { String($0.prefix { $0 != "[" && $0 != "." }) }
    #expect(e.status == 400, "\(e) for \(String(decoding: body, as: UTF8.self))")
    #expect(e.type == "invalid_request_error")
    #expect(root.map { r in fields.contains(r) } == true, "param \(e.param ?? "nil") of \(e) for \(String(decoding: body, as: UTF8.self))")
}

private enum NumberField { case int(ClosedRange<Int>), double(ClosedRange<Double>) }

/// What validation of an integer or number field must conclude about `v`: refused (nil), or the value kept.
private func oracle(_ v: JSONValue, _ kind: NumberField) -> Double?? {
    switch (kind, v) {
    case (_, .null): return .some(nil)
    case let (.int(r), .int(i)): return r.contains(i) ? .some(Double(i)) : nil
    case let (.int(r), .double(d)):
        // An integral double is an integer (SDKs send 256.0); beyond 2^53-ish it is refused as a type error.
        guard d.rounded() == d, abs(d) < 9e15 else { return nil }
        return r.contains(Int(d)) ? .some(d) : nil
    case let (.double(r), .int(i)): return r.contains(Double(i)) ? .some(Double(i)) : nil
    case let (.double(r), .double(d)): return r.contains(d) ? .some(d) : nil
    default: return nil
    }
}

private struct FieldCase: Sendable, CustomStringConvertible {
    let field: String
    let value: JSONValue
    var description: String { "\(field) = \(value)" }
}

private func fieldCase(_ fields: [String], _ rng: inout RNG) -> FieldCase {
    let others: [JSONValue] = [.null, .bool(true), .string("5"), .array([.int(5)]), .object([:])]
    let v: JSONValue = chance(0.85, &rng) ? wildNumber(&rng) : pick(others, &rng)
    return FieldCase(field: pick(fields, &rng), value: v)
}

// MARK: - The properties

@Suite struct PropertyTests {
    // 1. Round trips of in-range values.

    @Test func workerMessagesRoundTrip() async throws {
        await propertyCheck(count: 600, input: Generator(run: { rng in genWorker(&rng) })) { m in
            let bytes = m.encode()
            let decoded = try WorkerMessage.decode(bytes)
            #expect(decoded == m)
            #expect(bytes.count <= L.maxControlFrameBytes)
        }
    }

    @Test func routerMessagesRoundTrip() async throws {
        await propertyCheck(count: 400, input: Generator(run: { rng in genRouter(&rng) })) { m in
            let decoded = try RouterMessage.decode(m.encode())
            #expect(decoded == m)
        }
    }

    @Test func gatewayMessagesRoundTrip() async throws {
        await propertyCheck(count: 400, input: Generator(run: { rng in genGateway(&rng) })) { m in
            let decoded = try GatewayMessage.decode(m.encode())
            #expect(decoded == m)
        }
    }

    @Test func jobEnvelopesRoundTrip() async throws {
        await propertyCheck(count: 500, input: Generator(run: { rng in genEnvelope(&rng) })) { e in
            let decoded = try JobEnvelope.decode(e.encode())
            #expect(decoded == e)
        }
    }

    @Test func streamEventsRoundTrip() async throws {
        await propertyCheck(count: 800, input: Generator(run: { rng in genEvent(&rng) })) { e in
            let decoded = try StreamEvent.decode(e.encode())
            #expect(decoded == e)
        }
    }

    /// Values exactly at the largest bounds (too big to generate often): 1,024 models, 16
    /// capabilities, 65,536 prefix hashes, a 32 MiB payload, a 64 MiB vectors event; one more is refused.
    @Test func largestFramesAtTheirBounds() throws {
        let info = WorkerInfo(id: String(repeating: "w", count: L.maxIDBytes), slots: L.slots.upperBound, freeSlots: L.slots.upperBound,
                              models: Array(repeating: String(repeating: "m", count: L.maxNameBytes), count: L.maxModels),
                              capabilities: Array(repeating: String(repeating: "漢", count: L.maxNameBytes / 3), count: L.maxCapabilities),
                              engine: "e", host: "h", pid: Int(Int32.max), joinKey: String(repeating: "k", count: L.maxIDBytes))
        #expect(try WorkerMessage.decode(WorkerMessage.hello(info).encode()) == .hello(info))
        let hashes = (0..<UInt64(L.maxPrefixHashes)).map { $0 &* 0x9E37_79B9_7F4A_7C15 }
        #expect(try WorkerMessage.decode(WorkerMessage.prefixes(hashes).encode()) == .prefixes(hashes))

        var job = JobEnvelope(requestId: "r", replyTo: "g", tier: "t", project: "p", endpoint: "e", model: "m", acceptedAtMs: 0,
                              queueDeadlineMs: 1, requestDeadlineMs: L.timesMs.upperBound, payload: [UInt8](repeating: 0x7B, count: L.maxPayloadBytes))
        // (Compared by size: `==` on 32 MiB arrays is slow in debug builds.)
        #expect(try JobEnvelope.decode(job.encode()).payload.count == L.maxPayloadBytes)
        job.payload.append(0x7D)
        #expect(throws: WireError.self) { try JobEnvelope.decode(job.encode()) }
        #expect(throws: WireError.self) { try GatewayMessage.decode(GatewayMessage.submit(job).encode()) }
        job.payload = []

        let dim = L.dims.upperBound
        var ev = StreamEvent(requestId: "r", attempt: 1, seq: 0, body: .vectors(dim: dim, data: [UInt8](repeating: 0, count: L.maxVectorBytes)))
        if case let .vectors(d, data) = try StreamEvent.decode(ev.encode()).body { #expect(d == dim && data.count == L.maxVectorBytes) } else { Issue.record("not vectors") }
        ev.body = .vectors(dim: dim, data: [UInt8](repeating: 0, count: L.maxVectorBytes + 4 * dim))
        #expect(throws: WireError.self) { try StreamEvent.decode(ev.encode()) }
    }

    // 2. Out of range is refused.

    @Test func outOfRangeWorkerMessagesAreRefused() async {
        await propertyCheck(count: 300, input: Generator(run: { rng in badWorker(&rng) })) { bad in
            #expect(throws: WireError.self, "\(bad.label)") { try WorkerMessage.decode(bad.bytes) }
        }
    }

    @Test func outOfRangeEnvelopesAreRefused() async {
        await propertyCheck(count: 600, input: Generator(run: { rng in badEnvelope(&rng) })) { bad in
            #expect(throws: WireError.self, "\(bad.label)") { try JobEnvelope.decode(bad.bytes) }
        }
    }

    @Test func outOfRangeRouterAndGatewayMessagesAreRefused() async {
        await propertyCheck(count: 500, input: Generator(run: { rng in badRouter(&rng) }), Generator(run: { rng in badGateway(&rng) })) { r, g in
            #expect(throws: WireError.self, "router \(r.label)") { try RouterMessage.decode(r.bytes) }
            #expect(throws: WireError.self, "gateway \(g.label)") { try GatewayMessage.decode(g.bytes) }
        }
    }

    @Test func outOfRangeStreamEventsAreRefused() async {
        await propertyCheck(count: 1000, input: Generator(run: { rng in badEvent(&rng) })) { bad in
            #expect(throws: WireError.self, "\(bad.label)") { try StreamEvent.decode(bad.bytes) }
        }
    }

    /// An error status outside 400…599 is not refused but decoded as 502, everything else intact.
    @Test func errorStatusesOutsideHTTPErrorsBecome502() async {
        let gen = Generator(run: { rng -> StreamEvent in
            var e = genEvent(&rng)
            let status = chance(0.3, &rng) ? pick([0, 100, 200, 302, 399, 600, 999, 1000, -400], &rng) : outside(L.errorStatuses, &rng)
            e.body = .error(genError(&rng, small: false, status: status))
            return e
        })
        await propertyCheck(count: 300, input: gen) { e in
            var expected = e
            if case var .error(err) = e.body { err.status = L.mappedStatus; expected.body = .error(err) }
            let decoded = try StreamEvent.decode(e.encode())
            #expect(decoded == expected)
            if case let .error(err) = decoded.body { #expect(err.httpStatus == L.mappedStatus) }
        }
    }

    // 3. No trap on arbitrary input.

    @Test func arbitraryBytesNeverTrapAnyDecoder() async {
        await propertyCheck(count: 1000, input: Generator(run: { rng in arbitraryFrame(&rng) })) { bytes in
            checkDecode(WorkerMessage.self, bytes)
            checkDecode(RouterMessage.self, bytes)
            checkDecode(GatewayMessage.self, bytes)
            checkDecode(JobEnvelope.self, bytes)
            checkDecode(StreamEvent.self, bytes)
            if bytes.count >= 2, ![WorkerMessage.wireKind, RouterMessage.wireKind, GatewayMessage.wireKind, JobEnvelope.wireKind, StreamEvent.wireKind].contains(bytes[0]) || bytes[1] != wireVersion {
                // A frame without a known header is refused by every decoder.
                #expect(checkDecode(WorkerMessage.self, bytes) == nil && checkDecode(StreamEvent.self, bytes) == nil)
            }
        }
    }

    @Test func mutatedWorkerMessagesNeverTrap() async {
        await propertyCheck(count: 200, input: Generator(run: { rng in mutated(genWorker(&rng, small: true), &rng) })) { checkMutations($0) }
    }

    @Test func mutatedRouterMessagesNeverTrap() async {
        await propertyCheck(count: 100, input: Generator(run: { rng in mutated(genRouter(&rng, small: true), &rng) })) { checkMutations($0) }
    }

    @Test func mutatedGatewayMessagesNeverTrap() async {
        await propertyCheck(count: 100, input: Generator(run: { rng in mutated(genGateway(&rng, small: true), &rng) })) { checkMutations($0) }
    }

    @Test func mutatedEnvelopesNeverTrap() async {
        await propertyCheck(count: 100, input: Generator(run: { rng in mutated(genEnvelope(&rng, small: true), &rng) })) { checkMutations($0) }
    }

    @Test func mutatedStreamEventsNeverTrap() async {
        await propertyCheck(count: 200, input: Generator(run: { rng in mutated(genEvent(&rng, small: true), &rng) })) { checkMutations($0) }
    }

    // 4. The JSON parser.

    @Test func arbitraryBytesParseOrThrowInvalidJSON() async {
        await propertyCheck(count: 1000, input: Generator(run: { rng in arbitraryJSONBytes(&rng) })) { checkParse($0) }
    }

    @Test func jsonValuesRoundTripThroughBothWriters() async throws {
        let gen = Generator(run: { rng -> JSONCase in
            let v = genJSON(4, &rng)
            var alt: [UInt8] = []
            altEncode(v, &rng, &alt)
            return JSONCase(value: v, alt: alt)
        })
        await propertyCheck(count: 800, input: gen) { c in
            let compact = try JSONValue.parse(c.value.encoded()), alt = try JSONValue.parse(c.alt)
            #expect(compact == c.value)
            #expect(alt == c.value)
        }
    }

    /// Every proper prefix of a document whose root is a container or string is refused (a prefix of
    /// a bare number can be a shorter number, so those only have to not trap).
    @Test func truncatedDocumentsAreRefused() async {
        await propertyCheck(count: 200, input: Generator(run: { rng in genJSON(3, &rng) })) { v in
            let bytes = v.encoded()
            let mustFail: Bool
            switch v { case .array, .object, .string, .bool, .null: mustFail = true; case .int, .double: mustFail = false }
            for cut in 0..<bytes.count {
                let prefix = Array(bytes[0..<cut])
                if mustFail {
                    switch Result(catching: { () throws(APIError) in try JSONValue.parse(prefix) }) {
                    case .success: Issue.record("prefix of \(bytes.count - cut) bytes short parses: \(String(decoding: prefix, as: UTF8.self))")
                    case let .failure(e): #expect(e.code == "invalid_json")
                    }
                } else {
                    checkParse(prefix)
                }
            }
        }
    }

    /// Nesting up to 128 parses; deeper is refused with invalid_json before the stack can overflow.
    @Test(arguments: [1, 64, 127, 128, 129, 130, 1000, 100_000])
    func deepNesting(depth: Int) {
        let shapes: [(open: String, leaf: String, close: String)] = [("[", "0", "]"), ("{\"a\":", "0", "}"), ("[{\"k\":", "null", "}]")]
        for shape in shapes {
            let perLevel = shape.open == "[{\"k\":" ? 2 : 1
            let levels = perLevel == 2 ? max(1, depth / 2) : depth
            let actualDepth = levels * perLevel
            let opened = String(repeating: shape.open, count: levels)
            let docs = [opened + shape.leaf + String(repeating: shape.close, count: levels), opened]
            for (i, doc) in docs.enumerated() {
                let result = Result { () throws(APIError) in try JSONValue.parse(Array(doc.utf8)) }
                if actualDepth <= JSONParser.maxDepth && i == 0 {
                    #expect((try? result.get()) != nil, "depth \(actualDepth) \(shape.open)")
                } else {
                    #expect(throws: APIError.self) { try result.get() }
                    if case let .failure(e) = result { #expect(e.code == "invalid_json" && e.status == 400) }
                }
            }
        }
    }

    // 5. The request validators.

    @Test func chatRequestsParseOrNameTheField() async {
        let required: [String: JSONValue] = ["model": .string("m"), "messages": userMessage]
        await propertyCheck(count: 1000, input: Generator(run: { rng in requestBody(chatFields, required: required, &rng) })) { c in
            switch Result(catching: { () throws(APIError) in try ChatRequest.parse(c.body) }) {
            case let .failure(error):
                checkRefusal(error, chatFields, c.body)
            case let .success(r):
                #expect(!r.model.isEmpty && !r.messages.isEmpty && r.messages.allSatisfy { ChatRequest.roles.contains($0.role) })
                #expect((1...ChatRequest.maxN).contains(r.n))
                #expect(r.maxTokens.map { (1...ChatRequest.maxCompletionTokens).contains($0) } ?? true)
                #expect(r.topK.map { (-1...ChatRequest.maxTopK).contains($0) } ?? true)
                #expect(r.topLogprobs.map { (0...20).contains($0) } ?? true)
                #expect(r.temperature.map { (0...2).contains($0) } ?? true)
                #expect([r.topP, r.minP].allSatisfy { $0.map { (0...1).contains($0) } ?? true })
                #expect([r.presencePenalty, r.frequencyPenalty].allSatisfy { $0.map { (-2...2).contains($0) } ?? true })
                #expect(r.stop.count <= ChatRequest.maxStops && r.stop.allSatisfy { !$0.isEmpty && $0.utf8.count <= ChatRequest.maxStopBytes })
                #expect(r.includeUsage ? r.stream : true)
            }
        }
    }

    @Test func embeddingsRequestsParseOrNameTheField() async {
        let required: [String: JSONValue] = ["model": .string("m"), "input": .string("hello")]
        await propertyCheck(count: 800, input: Generator(run: { rng in requestBody(embeddingsFields, required: required, &rng) })) { c in
            switch Result(catching: { () throws(APIError) in try EmbeddingsRequest.parse(c.body) }) {
            case let .failure(error):
                checkRefusal(error, embeddingsFields, c.body)
            case let .success(r):
                #expect((1...EmbeddingsRequest.maxInputs).contains(r.inputs.count))
                for input in r.inputs {
                    switch input {
                    case let .text(s): #expect(!s.isEmpty)
                    case let .tokens(t): #expect(!t.isEmpty && t.allSatisfy { $0 >= 0 })
                    }
                }
                #expect(r.dimensions.map { L.dims.contains($0) } ?? true)
            }
        }
    }

    @Test func rerankRequestsParseOrNameTheField() async {
        let required: [String: JSONValue] = ["query": .string("q"), "documents": .array([.string("a"), .object(["text": .string("b")])])]
        await propertyCheck(count: 800, input: Generator(run: { rng in requestBody(rerankFields, required: required, &rng) })) { c in
            switch Result(catching: { () throws(APIError) in try RerankRequest.parse(c.body) }) {
            case let .failure(error):
                checkRefusal(error, rerankFields, c.body)
            case let .success(r):
                #expect(!r.query.isEmpty)
                #expect((1...RerankRequest.maxDocuments).contains(r.documents.count) && r.documents.allSatisfy { !$0.isEmpty })
                #expect(r.topN.map { (1...RerankRequest.maxDocuments).contains($0) } ?? true)
            }
        }
    }

    /// One numeric field with any value on an otherwise valid request: accepted exactly when it is an
    /// integer (or number) in its range, and then kept; otherwise a 400 naming exactly that field.
    @Test func numericFieldsAreAcceptedExactlyInRange() async {
        let chatInts: [String: (ClosedRange<Int>, (ChatRequest) -> Int?)] = [
            "max_completion_tokens": (1...ChatRequest.maxCompletionTokens, { $0.maxTokens }),
            "max_tokens": (1...ChatRequest.maxCompletionTokens, { $0.maxTokens }),
            "top_k": (-1...ChatRequest.maxTopK, { $0.topK }),
            "n": (1...ChatRequest.maxN, { $0.n }),
            "seed": (Int.min...Int.max, { $0.seed }),
            "top_logprobs": (0...20, { $0.topLogprobs }),
        ]
        let chatDoubles: [String: (ClosedRange<Double>, (ChatRequest) -> Double?)] = [
            "temperature": (0...2, { $0.temperature }), "top_p": (0...1, { $0.topP }), "min_p": (0...1, { $0.minP }),
            "presence_penalty": (-2...2, { $0.presencePenalty }), "frequency_penalty": (-2...2, { $0.frequencyPenalty }),
        ]
        let fields = Array(chatInts.keys) + Array(chatDoubles.keys) + ["dimensions", "top_n"]
        await propertyCheck(count: 1000, input: Generator(run: { rng in fieldCase(fields, &rng) })) { c in
            let kind: NumberField
            let parse: ([UInt8]) throws(APIError) -> Double?
            var body: [String: JSONValue] = ["model": .string("m"), "messages": userMessage, "logprobs": .bool(true)]
            switch c.field {
            case "dimensions":
                kind = .int(L.dims)
                body = ["model": .string("m"), "input": .string("x")]
                parse = { (b) throws(APIError) in try EmbeddingsRequest.parse(b).dimensions.map(Double.init) }
            case "top_n":
                kind = .int(1...RerankRequest.maxDocuments)
                body = ["query": .string("q"), "documents": .array([.string("d")])]
                parse = { (b) throws(APIError) in try RerankRequest.parse(b).topN.map(Double.init) }
            default:
                if let entry = chatInts[c.field] {
                    kind = .int(entry.0)
                    parse = { (b) throws(APIError) in try entry.1(ChatRequest.parse(b)).map(Double.init) }
                } else {
                    let entry = chatDoubles[c.field]!
                    kind = .double(entry.0)
                    parse = { (b) throws(APIError) in try entry.1(ChatRequest.parse(b)) }
                }
            }
            body[c.field] = c.value
            let encoded = JSONValue.object(body).encoded()
            let kept: () throws(APIError) -> Double? = { () throws(APIError) in try parse(encoded) }
            let want = oracle(c.value, kind)
            switch Result(catching: kept) {
            case let .success(got):
                if let want {
                    // `n` defaults to 1 when absent or null.
                    #expect(got == (c.field == "n" ? want ?? 1 : want), "\(c) kept as \(got.map { "\($0)" } ?? "nil")")
                } else {
                    Issue.record("\(c) accepted as \(got.map { "\($0)" } ?? "nil")")
                }
            case let .failure(error):
                #expect(want == nil, "\(c) refused: \(error)")
                #expect(error.status == 400 && error.param == c.field, "\(c) refused with \(error) param \(error.param ?? "nil")")
            }
        }
    }
}
