import XeroCore

/// The workers a job can be placed on now, kept ready for placement (docs/routing.md, "A router
/// that scales"): grouped into pools by what they serve, each pool ordered by load, so a decision
/// reads the top of a heap plus the prompt's holders instead of scanning every worker.
///
/// - A joined worker has a dense number (`Handle`) until it leaves; placement state lives in arrays
///   indexed by it, not in dictionaries keyed by its id.
/// - A pool is (capability, model, fleet). A worker is in a pool of every model (or `*`) and
///   capability it serves while it holds a credit here and is not draining.
/// - Order within a pool: load (the worker's own count of its running jobs over its slots,
///   corrected by this router's dispatches since), then prompt blocks held (new prompts go to the
///   emptiest cache), then id — so every router orders the same state the same way.
///
/// Pure state, owned by the scheduler, which re-files a worker after every change to it.
struct CandidateIndex {
    typealias Handle = Int32

    struct PoolKey: Hashable {
        var capability: String
        var model: String
        var fleet: AgentFleet
    }

    /// One pool's ready workers, twice: a min-heap in placement order, and sorted by id (round robin).
    struct Pool {
        var heap: [Handle] = []
        /// Heap positions of the workers for which this is not their first pool (most workers are
        /// in one pool: theirs is in `firstPoolPosition`, an array, not a hash).
        var position: [Handle: Int] = [:]
        var byId: [Handle] = []
    }

    private(set) var handles: [String: Handle] = [:]
    private(set) var ids: [String] = []
    /// The first 8 bytes of each id, big-endian and zero-padded: compares like the ids themselves
    /// (UTF-8 byte order is code point order), so most id ties cost an integer comparison.
    private var idPrefix: [UInt64] = []
    private var freeHandles: [Handle] = []
    private(set) var load: [Double] = []
    private(set) var held: [Int] = []
    /// Holds a credit here and is not draining.
    private(set) var ready: [Bool] = []
    /// Its breaker is not closed: the scheduler asks the breaker before placing a job on it.
    private(set) var guarded: [Bool] = []
    /// The pools of what the worker serves (whether or not it is ready).
    private(set) var poolsOf: [[Int]] = []
    /// Per worker: its first pool (-1: none) and its heap position there (-1: not in the heap).
    private var firstPool: [Int] = []
    private var firstPoolPosition: [Int] = []
    /// Whether any pool is for `*` (the simulator), and the projects with agents of their own:
    /// a job's pools are looked up only where they can exist.
    private var wildcardPools = 0
    private var agentProjects: [String: Int] = [:]
    private(set) var pools: [Pool] = []
    private var poolNumbers: [PoolKey: Int] = [:]
    /// Ready workers (each counted once).
    private(set) var readyCount = 0

    // MARK: Workers

    /// A worker joins (or joins again): its handle, and its pools from what it serves now.
    @discardableResult
    mutating func join(_ info: WorkerInfo, fleet: AgentFleet) -> Handle {
        let h: Handle
        if let known = handles[info.id] {
            h = known
            setReady(h, false)
        } else if let reused = freeHandles.popLast() {
            h = reused
            ids[Int(h)] = info.id
            idPrefix[Int(h)] = Self.prefix(info.id)
        } else {
            h = Handle(ids.count)
            ids.append(info.id); idPrefix.append(Self.prefix(info.id)); load.append(0); held.append(0); ready.append(false); guarded.append(false); poolsOf.append([])
            firstPool.append(-1); firstPoolPosition.append(-1)
        }
        handles[info.id] = h
        var mine: [Int] = []
        for capability in Set(info.capabilities) {
            for model in Set(info.models) { mine.append(poolNumber(PoolKey(capability: capability, model: model, fleet: fleet))) }
        }
        poolsOf[Int(h)] = mine
        firstPool[Int(h)] = mine.first ?? -1
        return h
    }

    /// A worker left: out of every pool, and its handle free for the next one.
    mutating func leave(_ id: String) {
        guard let h = handles.removeValue(forKey: id) else { return }
        setReady(h, false)
        let i = Int(h)
        ids[i] = ""; load[i] = 0; held[i] = 0; guarded[i] = false; poolsOf[i] = []; firstPool[i] = -1
        freeHandles.append(h)
    }

    /// A worker's state changed: re-file it.
    mutating func update(_ h: Handle, ready isReady: Bool, load newLoad: Double, held newHeld: Int, guarded isGuarded: Bool) {
        let i = Int(h)
        guarded[i] = isGuarded
        let keyChanged = load[i] != newLoad || held[i] != newHeld
        load[i] = newLoad
        held[i] = newHeld
        if ready[i] != isReady { setReady(h, isReady) }
        else if isReady && keyChanged { for p in poolsOf[i] { resift(p, h) } }
    }

    // MARK: Queries

    /// The pools that hold the workers which may run a job: its capability, its model or `*`,
    /// and the fleets its endpoint allows (the platform's, the job's project's agents).
    func pools(for job: JobEnvelope) -> [Int] {
        let capability = job.kind.capability
        var fleets: [AgentFleet] = []
        if job.fleet != .project { fleets.append(.platform) }
        if job.fleet != .platform, agentProjects[job.project] != nil { fleets.append(.project(job.project)) }
        var out: [Int] = []
        for fleet in fleets {
            for model in wildcardPools > 0 && job.model != "*" ? [job.model, "*"] : [job.model] {
                if let p = poolNumbers[PoolKey(capability: capability, model: model, fleet: fleet)], !pools[p].heap.isEmpty { out.append(p) }
            }
        }
        return out
    }

    /// Placement order: least loaded, then fewest prompt blocks held, then id.
    func precedes(_ a: Handle, _ b: Handle) -> Bool {
        let i = Int(a), j = Int(b)
        if load[i] != load[j] { return load[i] < load[j] }
        if held[i] != held[j] { return held[i] < held[j] }
        return idPrecedes(a, b)
    }

    /// Whether a's id sorts before b's.
    func idPrecedes(_ a: Handle, _ b: Handle) -> Bool {
        let i = Int(a), j = Int(b)
        if idPrefix[i] != idPrefix[j] { return idPrefix[i] < idPrefix[j] }
        return ids[i] < ids[j]
    }

    private static func prefix(_ id: String) -> UInt64 {
        var v: UInt64 = 0, n = 0
        for b in id.utf8.prefix(8) { v = v << 8 | UInt64(b); n += 1 }
        return n == 0 ? 0 : v << (8 * UInt64(8 - n))
    }

    /// Whether a worker is in any of `pools` (it is ready and serves what they serve).
    func isMember(_ h: Handle, of pools: [Int]) -> Bool {
        let i = Int(h)
        guard ready[i] else { return false }
        if pools.contains(firstPool[i]) { return true }
        guard poolsOf[i].count > 1 else { return false }
        for p in poolsOf[i] where pools.contains(p) { return true }
        return false
    }

    // MARK: Pools

    private mutating func poolNumber(_ key: PoolKey) -> Int {
        if let p = poolNumbers[key] { return p }
        pools.append(Pool())
        poolNumbers[key] = pools.count - 1
        if key.model == "*" { wildcardPools += 1 }
        if case let .project(id) = key.fleet { agentProjects[id, default: 0] += 1 }
        return pools.count - 1
    }

    private mutating func setReady(_ h: Handle, _ isReady: Bool) {
        let i = Int(h)
        guard ready[i] != isReady else { return }
        ready[i] = isReady
        readyCount += isReady ? 1 : -1
        for p in poolsOf[i] {
            if isReady { insert(p, h) } else { remove(p, h) }
        }
    }

    private mutating func insert(_ p: Int, _ h: Handle) {
        pools[p].heap.append(h)
        setPosition(p, h, pools[p].heap.count - 1)
        siftUp(p, pools[p].heap.count - 1)
        let at = idInsertionPoint(p, ids[Int(h)])
        pools[p].byId.insert(h, at: at)
    }

    private mutating func remove(_ p: Int, _ h: Handle) {
        guard let at = position(p, h) else { return }
        setPosition(p, h, nil)
        let last = pools[p].heap.removeLast()
        if at < pools[p].heap.count {
            pools[p].heap[at] = last
            setPosition(p, last, at)
            siftUp(p, at)
            siftDown(p, position(p, last)!)
        }
        let k = idInsertionPoint(p, ids[Int(h)])
        if k < pools[p].byId.count, pools[p].byId[k] == h { pools[p].byId.remove(at: k) }
    }

    private mutating func resift(_ p: Int, _ h: Handle) {
        guard let at = position(p, h) else { return }
        siftUp(p, at)
        siftDown(p, position(p, h)!)
    }

    private func idInsertionPoint(_ p: Int, _ id: String) -> Int {
        var lo = 0, hi = pools[p].byId.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if ids[Int(pools[p].byId[mid])] < id { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    private mutating func siftUp(_ p: Int, _ start: Int) {
        var i = start
        while i > 0 {
            let parent = (i - 1) / 2
            guard precedes(pools[p].heap[i], pools[p].heap[parent]) else { break }
            swapAt(p, i, parent)
            i = parent
        }
    }

    private mutating func siftDown(_ p: Int, _ start: Int) {
        var i = start
        let n = pools[p].heap.count
        while true {
            var m = i
            let l = 2 * i + 1, r = l + 1
            if l < n, precedes(pools[p].heap[l], pools[p].heap[m]) { m = l }
            if r < n, precedes(pools[p].heap[r], pools[p].heap[m]) { m = r }
            guard m != i else { return }
            swapAt(p, i, m)
            i = m
        }
    }

    private mutating func swapAt(_ p: Int, _ i: Int, _ j: Int) {
        pools[p].heap.swapAt(i, j)
        setPosition(p, pools[p].heap[i], i)
        setPosition(p, pools[p].heap[j], j)
    }

    private func position(_ p: Int, _ h: Handle) -> Int? {
        if firstPool[Int(h)] == p { let at = firstPoolPosition[Int(h)]; return at < 0 ? nil : at }
        return pools[p].position[h]
    }

    private mutating func setPosition(_ p: Int, _ h: Handle, _ at: Int?) {
        if firstPool[Int(h)] == p { firstPoolPosition[Int(h)] = at ?? -1 } else { pools[p].position[h] = at }
    }
}
