import Logging
import XeroCore

/// One process's share of the shared rate limits: a `LeaseBook` behind a lock, a sweeper that
/// gives back what expired, and the batched writes that do it (docs/tenancy.md, "Leases").
/// With `enabled` off nothing is leased: every admission is decided in Redis and a released slot
/// goes straight back — the slots this process holds are still tracked here.
final class LimitLeases: Sendable {
    private struct State {
        var book: LeaseBook
        var sweeping = false
        var local = 0
    }

    /// One write to Redis: tokens back to a bucket, slots back to a key's in-flight hash, or the
    /// renewal of this process's expiry there.
    struct Give: Sendable {
        enum Kind: String, Sendable { case tokens = "t", slots = "s", renew = "r" }
        var kind: Kind
        var key: String
        /// Tokens or slots given back; for `renew` the expiry in ms.
        var amount: Int
        /// The bucket's capacity (tokens only).
        var capacity: Int = 0
    }

    let owner: String
    let enabled: Bool
    private let state: Locked<State>
    private let gives: WriteQueue<Give>
    private let scripts: ScriptRunner
    private let logger: Logger

    init(owner: String, scripts: ScriptRunner, logger: Logger, enabled: Bool, leaseMs: Int64 = 100) {
        self.owner = owner
        self.enabled = enabled
        self.scripts = scripts
        self.logger = logger
        state = Locked(State(book: LeaseBook(leaseMs: leaseMs)))
        gives = WriteQueue(name: "lease returns", logger: logger) { [owner] in try await Self.write(scripts, owner: owner, $0) }
    }

    var waiting: Int { gives.waiting }

    func takeLocally(_ charges: [LeaseBook.Charge], slotKey: String?) -> LeaseBook.LocalAdmission? {
        guard enabled else { return nil }
        let now = nowMs()
        return state.withLock { s in
            let r = s.book.takeLocally(charges, slotKey: slotKey, now: now)
            if r != nil { s.local += 1 }
            return r
        }
    }

    /// Admissions decided from leases, without Redis (since start).
    var localAdmissions: Int { state.withLock { $0.local } }

    func wants(_ charges: [LeaseBook.Charge], slotKey: String?) -> (tokens: [Int], spareSlots: Int) {
        guard enabled else { return (charges.map { _ in 0 }, 0) }
        let now = nowMs()
        return state.withLock { $0.book.wants(charges, slotKey: slotKey, now: now) }
    }

    func granted(_ charges: [LeaseBook.Charge], leases: [Int], remaining: [Int], resetMs: [Int], versions: [Int]) -> [Int] {
        guard enabled else { return remaining }
        let now = nowMs()
        let out = state.withLock { $0.book.granted(charges, leases: leases, remaining: remaining, resetMs: resetMs, versions: versions, now: now) }
        startSweeping()
        return out
    }

    func grantedSlots(_ key: String, count: Int, freeAfter: Int, limit: Int, ttlMs: Int) {
        let now = nowMs()
        // Off: never keep an idle slot (freeAfter 0 says "near the limit").
        state.withLock { $0.book.grantedSlots(key, count: count, freeAfter: enabled ? freeAfter : 0, limit: limit, ttlMs: ttlMs, now: now) }
        startSweeping()
    }

    func failed(_ charges: [LeaseBook.Charge], slotKey: String?) {
        state.withLock { $0.book.failed(charges, slotKey: slotKey) }
    }

    func release(_ slotKey: String) {
        let now = nowMs()
        let back = state.withLock { $0.book.release(slotKey, now: now) }
        if back > 0 { gives.add(Give(kind: .slots, key: slotKey, amount: back)) }
    }

    /// Gives back every unused token and idle slot now. False if Redis refused (kept for retry).
    func returnAll() async -> Bool {
        let r = state.withLock { $0.book.returnAll() }
        queue(r)
        return await gives.flush()
    }

    private func queue(_ r: LeaseBook.Returns) {
        for t in r.tokens { gives.add(Give(kind: .tokens, key: t.key, amount: t.cost, capacity: t.capacity)) }
        for s in r.slots { gives.add(Give(kind: .slots, key: s.key, amount: s.count)) }
        for s in r.refresh { gives.add(Give(kind: .renew, key: s.key, amount: s.count)) }
    }

    /// One sweeper while anything is held: every half idle-slot time it gives back what expired.
    private func startSweeping() {
        let start = state.withLock { s -> Bool in
            if s.sweeping || s.book.isEmpty { return false }
            s.sweeping = true
            return true
        }
        guard start else { return }
        let interval = UInt64(max(1, state.withLock { min($0.book.leaseMs, $0.book.slotIdleMs) } / 2)) * 1_000_000
        Task {
            while true {
                try? await Task.sleep(nanoseconds: interval)
                let now = nowMs()
                let (r, done) = state.withLock { s -> (LeaseBook.Returns, Bool) in
                    let r = s.book.sweep(now: now)
                    if s.book.isEmpty { s.sweeping = false }
                    return (r, !s.sweeping)
                }
                queue(r)
                if done { return }
            }
        }
    }

    /// Gives back tokens (refilled, capped at capacity: a bucket never holds more than it may),
    /// slots (this owner's count in the hash, never below zero) and renews expiries, in one call.
    /// ARGV: now, owner, count, then per give: kind, amount, capacity. KEYS: per give its key.
    static let giveScript = LuaScript("""
    local now, owner = tonumber(ARGV[1]), ARGV[2]
    local a = 4
    for i = 1, tonumber(ARGV[3]) do
      local kind, v, cap = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
      local key = KEYS[i]
      if kind == 't' then
        local b = redis.call('HMGET', key, 't', 'ts')
        local t = tonumber(b[1])
        if t ~= nil then
          t = math.min(cap, t + math.max(0, now - tonumber(b[2])) * cap / 60000.0 + v)
          redis.call('HSET', key, 't', tostring(t), 'ts', tostring(now))
          redis.call('PEXPIRE', key, 120000)
        end
      elseif kind == 's' then
        local c = tonumber(redis.call('HGET', key, owner))
        if c ~= nil then
          if c - v <= 0 then redis.call('HDEL', key, owner, owner .. ':exp')
          else redis.call('HSET', key, owner, c - v) end
        end
      elseif redis.call('HEXISTS', key, owner) == 1 then
        redis.call('HSET', key, owner .. ':exp', now + v)
        if redis.call('PTTL', key) < v then redis.call('PEXPIRE', key, v) end
      end
      a = a + 3
    end
    return 1
    """)

    static func write(_ scripts: ScriptRunner, owner: String, _ batch: [Give]) async throws {
        var args = [String(nowMs()), owner, String(batch.count)]
        for g in batch { args += [g.kind.rawValue, String(g.amount), String(g.capacity)] }
        let reply = try await scripts.run(giveScript, keys: batch.map(\.key), args: args)
        if case let .error(e) = reply { throw RedisError("lease return script: \(e)") }
    }
}
