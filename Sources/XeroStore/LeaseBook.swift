/// What one gateway holds of the shared rate limits, so that most admissions need no Redis call
/// (docs/tenancy.md, "Leases"). Pure state: `RateLimiter` drives it and does the Redis work.
///
/// - A **token lease** is part of a shared bucket that the admission script moved to this gateway
///   (taken off the bucket in Redis, so no gateway can spend it twice). Requests whose every bucket
///   has a lease covering its cost are admitted locally; unused tokens go back to the bucket when
///   the lease expires (`leaseMs` after its last grant).
/// - A **slot lease** is concurrency slots of one key held by this gateway in the key's in-flight
///   hash. A request takes a held idle slot locally; a released slot is kept idle only while the
///   key was far from its limit at the last grant, and for at most `slotIdleMs`.
/// - Leases are sized by this gateway's own demand over the last `leaseMs`, and the script grants
///   them only out of the upper half of a bucket (or of the free slots): near a limit every
///   admission is decided in Redis, one by one, exactly as without leases.
struct LeaseBook: Sendable {
    struct TokenLease: Sendable {
        var left: Int
        var capacity: Int
        var expiresAtMs: Int64
        /// What the last reply said the bucket holds (with this lease), less what was spent since.
        var remaining: Int
        var resetMs: Int
        /// The bucket's write version in the reply that set `remaining` (0: none yet).
        var version = 0
    }
    struct SlotLease: Sendable {
        var held = 0
        var running = 0
        /// The last grant left more than half the key's slots free: idle slots may be kept.
        var keepIdle = false
        var idleSinceMs: Int64 = 0
        var refreshedAtMs: Int64 = 0
        /// The expiry the grant set on this gateway's share of the key's in-flight hash.
        var ttlMs = 0
        var idle: Int { held - running }
    }
    /// Demand in the current and the previous window of `leaseMs`.
    struct Demand: Sendable {
        var windowStartMs: Int64
        var current = 0
        var previous = 0
        /// An ask for a lease is in flight since then (0 = none); one older than a second is
        /// presumed lost.
        var askedAtMs: Int64 = 0
    }

    /// One bucket of a request: its Redis key, capacity and cost.
    struct Charge: Sendable, Equatable {
        var key: String
        var capacity: Int
        var cost: Int
    }

    /// Slots of one key's in-flight hash to give back.
    struct SlotReturn: Sendable, Equatable {
        var key: String
        var count: Int
    }

    /// What `sweep` found to give back to Redis.
    struct Returns: Sendable, Equatable {
        var tokens: [Charge] = []   // cost = unused tokens to add back
        var slots: [SlotReturn] = []
        var refresh: [SlotReturn] = []  // slot hashes whose expiry this gateway must renew (count = TTL ms)
    }

    let leaseMs: Int64
    /// How long a released slot may stay idle with this gateway: long enough for the next request
    /// under load to find it, short enough that another gateway refused meanwhile retries into it.
    let slotIdleMs: Int64
    let slotTTLRefreshMs: Int64
    private(set) var tokens: [String: TokenLease] = [:]
    private(set) var slots: [String: SlotLease] = [:]
    private var demand: [String: Demand] = [:]
    /// Leases replaced before they were given back, to give back at the next sweep.
    private var orphaned: [Charge] = []

    init(leaseMs: Int64 = 100, slotIdleMs: Int64 = 20, slotRefreshMs: Int64 = 5_000) {
        self.leaseMs = max(1, leaseMs)
        self.slotIdleMs = max(1, slotIdleMs)
        self.slotTTLRefreshMs = slotRefreshMs
    }

    var isEmpty: Bool { tokens.isEmpty && slots.isEmpty && orphaned.isEmpty }

    /// Admits locally if every bucket's lease covers its cost and, with a slot key, an idle slot is
    /// held: spends them and returns each bucket's lease after it (in the charges' order, for the
    /// headers), and the top-up to ask Redis for now if a lease runs low. All or nothing:
    /// otherwise nothing changes and the caller asks Redis.
    /// On the request path of almost every admission: each key is hashed once per dictionary.
    mutating func takeLocally(_ charges: [Charge], slotKey: String?, now: Int64) -> LocalAdmission? {
        guard !charges.isEmpty || slotKey != nil else { return nil }
        var at: [Dictionary<String, TokenLease>.Index] = []
        at.reserveCapacity(charges.count)
        for c in charges {
            guard let i = tokens.index(forKey: c.key) else { return nil }
            let l = tokens.values[i]
            guard l.expiresAtMs > now, l.left >= c.cost, l.capacity == c.capacity else { return nil }
            at.append(i)
        }
        if let slotKey {
            guard let i = slots.index(forKey: slotKey), slots.values[i].idle > 0 else { return nil }
            slots.values[i].running += 1
            record(slotKey, 1, now: now)
        }
        var out: [TokenLease] = []
        out.reserveCapacity(charges.count)
        var low = false
        for (c, i) in zip(charges, at) {
            tokens.values[i].left -= c.cost
            tokens.values[i].remaining = max(0, tokens.values[i].remaining - c.cost)
            let l = tokens.values[i]
            out.append(l)
            let recent = record(c.key, c.cost, now: now)
            if l.left * 2 < recent || l.expiresAtMs - now < leaseMs / 2 { low = true }
        }
        return LocalAdmission(leases: out, topUp: low ? topUp(charges, now: now) : nil)
    }

    /// A local admission: the leases after it, and (rarely) a top-up to ask Redis for.
    struct LocalAdmission: Sendable {
        var leases: [TokenLease]
        /// Per charge, the tokens to add to its lease (`wants`, asks marked in flight); nil: none.
        var topUp: [Int]?
    }

    /// Leases are refilled before they run out: when one holds less than half its recent demand,
    /// or is within half a lease time of expiring. Otherwise every request arriving while the
    /// lease is empty misses at once and each goes to Redis (a burst of misses under load, about
    /// one admission in ten in `bench/run.sh tenancy` before this; docs/tenancy.md, "Leases").
    private mutating func topUp(_ charges: [Charge], now: Int64) -> [Int]? {
        let wants = charges.map { c in ask(c.key, held: tokens[c.key].map { $0.capacity == c.capacity ? $0.left : 0 } ?? 0, now: now) }
        return wants.contains { $0 > 0 } ? wants : nil
    }

    /// The lease to ask for with a request going to Redis: per bucket, this gateway's recent
    /// demand less what it still holds (0 while another ask for that bucket is in flight); and
    /// spare slots likewise. Marks the asks in flight until `granted` or `failed`.
    mutating func wants(_ charges: [Charge], slotKey: String?, now: Int64) -> (tokens: [Int], spareSlots: Int) {
        let t = charges.map { c -> Int in
            // An expired lease not yet swept still counts: a grant merges into it.
            let held = tokens[c.key].map { $0.capacity == c.capacity ? $0.left : 0 } ?? 0
            return ask(c.key, held: held, now: now)
        }
        let spare = slotKey.map { ask($0, held: slots[$0]?.idle ?? 0, now: now) } ?? 0
        return (t, spare)
    }

    private mutating func ask(_ key: String, held: Int, now: Int64) -> Int {
        roll(key, now: now)
        guard var d = demand[key], d.askedAtMs == 0 || now - d.askedAtMs > 1000 else { return 0 }
        let want = max(0, max(d.current, d.previous) - held)
        if want > 0 { d.askedAtMs = now; demand[key] = d }
        return want
    }

    /// Redis admitted the request: the leases it granted (0 = none) and what each bucket holds now,
    /// at which write version of the bucket (`versions`; empty: unordered).
    /// Returns per bucket what this gateway can report as remaining: the bucket plus its own lease.
    /// A reply older than the one the lease last took its remaining from (its caller resumed
    /// late) says nothing new about the bucket: adding the lease as it is now to that snapshot
    /// would count a lease granted after it twice (a first request reported 300 of 300 left).
    mutating func granted(_ charges: [Charge], leases: [Int], remaining: [Int], resetMs: [Int], versions: [Int] = [], now: Int64) -> [Int] {
        var out = remaining
        for (i, c) in charges.enumerated() {
            record(c.key, c.cost, now: now)
            demand[c.key]?.askedAtMs = 0
            let g = i < leases.count ? max(0, leases[i]) : 0
            // An expired lease not yet swept is still this gateway's (taken off the bucket, never
            // given back): it joins the new one. One of another capacity (the tier changed) goes back.
            if let old = tokens[c.key], old.capacity != c.capacity {
                if old.left > 0 { orphaned.append(Charge(key: c.key, capacity: old.capacity, cost: old.left)) }
                tokens[c.key] = nil
            }
            var l = tokens[c.key]
            if g > 0 {
                if l == nil { l = TokenLease(left: 0, capacity: c.capacity, expiresAtMs: 0, remaining: 0, resetMs: 0) }
                l!.left += g
                l!.expiresAtMs = now + leaseMs
            }
            if var l {
                let version = i < versions.count ? versions[i] : 0
                if version > 0, version < l.version {
                    l.remaining += g   // the newer snapshot had this grant off the bucket, not yet in the lease
                } else {
                    l.remaining = (i < remaining.count ? remaining[i] : 0) + l.left
                    l.resetMs = i < resetMs.count ? resetMs[i] : 0
                    l.version = version
                }
                tokens[c.key] = l
                if i < out.count { out[i] = l.remaining }
            }
        }
        return out
    }

    /// Redis admitted the request with `count` slots (its own plus spares), `freeAfter` left free
    /// of `limit`.
    mutating func grantedSlots(_ key: String, count: Int, freeAfter: Int, limit: Int, ttlMs: Int, now: Int64) {
        record(key, 1, now: now)
        demand[key]?.askedAtMs = 0
        var s = slots[key] ?? SlotLease()
        s.ttlMs = ttlMs
        if s.held == 0 { s.refreshedAtMs = now }
        s.held += max(1, count)
        s.running += 1
        s.keepIdle = freeAfter * 2 > limit
        if s.idle > 0 { s.idleSinceMs = now }
        slots[key] = s
    }

    /// The call to Redis failed or refused: the asks are no longer in flight.
    mutating func failed(_ charges: [Charge], slotKey: String?) {
        for c in charges { demand[c.key]?.askedAtMs = 0 }
        if let slotKey { demand[slotKey]?.askedAtMs = 0 }
    }

    /// A request's slot is free again; returns how many held slots to give back at once (all idle
    /// ones unless the key was far from its limit).
    mutating func release(_ key: String, now: Int64) -> Int {
        guard var s = slots[key], s.running > 0 else { return 0 }
        s.running -= 1
        var back = 0
        if !s.keepIdle { back = s.idle; s.held -= back }
        if s.idle > 0 { s.idleSinceMs = now }
        if s.held == 0 { slots[key] = nil } else { slots[key] = s }
        return back
    }

    /// Expired token leases and slots idle for `slotIdleMs`, to give back; slot hashes to renew.
    mutating func sweep(now: Int64) -> Returns {
        var r = Returns()
        r.tokens = orphaned
        orphaned = []
        for (key, l) in tokens where l.expiresAtMs <= now {
            if l.left > 0 { r.tokens.append(Charge(key: key, capacity: l.capacity, cost: l.left)) }
            tokens[key] = nil
        }
        for (key, var s) in slots {
            if s.idle > 0, s.idleSinceMs + slotIdleMs <= now {
                r.slots.append(SlotReturn(key: key, count: s.idle))
                s.held = s.running
            }
            if s.held == 0 { slots[key] = nil; continue }
            if s.refreshedAtMs + min(slotTTLRefreshMs, Int64(s.ttlMs / 3)) <= now {
                r.refresh.append(SlotReturn(key: key, count: s.ttlMs))
                s.refreshedAtMs = now
            }
            slots[key] = s
        }
        for (key, d) in demand where d.windowStartMs + 2 * leaseMs <= now && d.askedAtMs == 0 { demand[key] = nil }
        return r
    }

    /// Everything unused, to give back (shutdown, tests): token leases end; idle slots are returned.
    mutating func returnAll() -> Returns {
        var r = Returns()
        r.tokens = orphaned
        orphaned = []
        for (key, l) in tokens where l.left > 0 { r.tokens.append(Charge(key: key, capacity: l.capacity, cost: l.left)) }
        tokens = [:]
        for (key, var s) in slots where s.idle > 0 {
            r.slots.append(SlotReturn(key: key, count: s.idle))
            s.held = s.running
            slots[key] = s.held == 0 ? nil : s
        }
        return r
    }

    private mutating func roll(_ key: String, now: Int64) {
        Self.roll(&demand[key, default: Demand(windowStartMs: now)], now: now, leaseMs: leaseMs)
    }

    private static func roll(_ d: inout Demand, now: Int64, leaseMs: Int64) {
        if now - d.windowStartMs >= 2 * leaseMs { d.previous = 0; d.current = 0; d.windowStartMs = now }
        else if now - d.windowStartMs >= leaseMs { d.previous = d.current; d.current = 0; d.windowStartMs += leaseMs }
    }

    /// Adds to a key's demand in the current window (one dictionary access, in place); returns
    /// its recent demand (the larger of the current and the previous window).
    @discardableResult
    private mutating func record(_ key: String, _ amount: Int, now: Int64) -> Int {
        let leaseMs = leaseMs
        return Self.record(&demand[key, default: Demand(windowStartMs: now)], amount, now: now, leaseMs: leaseMs)
    }

    private static func record(_ d: inout Demand, _ amount: Int, now: Int64, leaseMs: Int64) -> Int {
        roll(&d, now: now, leaseMs: leaseMs)
        d.current += amount
        return max(d.current, d.previous)
    }
}
