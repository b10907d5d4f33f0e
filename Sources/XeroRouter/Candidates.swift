/// The workers a placement policy may choose from for one job: those with a credit here that may
/// run it and whose breaker allows it. Either the scheduler's pools for the job (read in load
/// order, never listed whole), or an explicit short list (what SLO filtering kept).
public struct Candidates {
    public typealias Handle = Int32

    let index: CandidateIndex
    let pools: [Int]
    /// Asked only for workers whose breaker is not closed.
    let breakerAllows: (Handle) -> Bool
    let listed: [Handle]?

    init(index: CandidateIndex, pools: [Int], breakerAllows: @escaping (Handle) -> Bool, listed: [Handle]? = nil) {
        self.index = index
        self.pools = pools
        self.breakerAllows = breakerAllows
        self.listed = listed
    }

    /// The same candidates narrowed to `handles` (each of them a candidate).
    func narrowed(to handles: [Handle]) -> Candidates {
        Candidates(index: index, pools: pools, breakerAllows: breakerAllows, listed: handles)
    }

    public func load(_ h: Handle) -> Double { index.load[Int(h)] }
    /// Placement order: less loaded, then fewer prompt blocks held, then id.
    public func precedes(_ a: Handle, _ b: Handle) -> Bool { index.precedes(a, b) }

    public func contains(_ h: Handle) -> Bool {
        if let listed { return listed.contains(h) }
        return index.isMember(h, of: pools) && allows(h)
    }

    private func allows(_ h: Handle) -> Bool { !index.guarded[Int(h)] || breakerAllows(h) }

    /// The first candidate in placement order (least loaded, fewest blocks held, id).
    public func leastLoaded() -> Handle? { smallest(1).first }

    /// Up to `k` candidates in placement order. From the pools it walks each heap from the top,
    /// so it costs about k log k, whatever the number of workers.
    public func smallest(_ k: Int) -> [Handle] {
        guard k > 0 else { return [] }
        if let listed { return Array(listed.sorted { index.precedes($0, $1) }.prefix(k)) }
        // A frontier of heap positions across the pools, smallest first.
        var frontier: [(pool: Int, at: Int)] = pools.compactMap { index.pools[$0].heap.isEmpty ? nil : ($0, 0) }
        var out: [Handle] = []
        while !frontier.isEmpty && out.count < k {
            var m = 0
            for i in 1..<frontier.count where index.precedes(handle(frontier[i]), handle(frontier[m])) { m = i }
            let (p, at) = frontier.remove(at: m)
            let h = index.pools[p].heap[at]
            if allows(h) && !out.contains(h) { out.append(h) }
            let l = 2 * at + 1
            if l < index.pools[p].heap.count { frontier.append((p, l)) }
            if l + 1 < index.pools[p].heap.count { frontier.append((p, l + 1)) }
        }
        return out
    }

    private func handle(_ f: (pool: Int, at: Int)) -> Handle { index.pools[f.pool].heap[f.at] }

    /// The `turn`-th candidate in id order (round robin), wrapping.
    public func inIdOrder(turn: Int) -> Handle? {
        let ordered: [Handle]
        if let listed {
            ordered = listed.sorted { index.idPrecedes($0, $1) }
        } else if pools.count == 1 {
            // The common case: one pool, already sorted by id. Step past any its breaker holds back.
            let byId = index.pools[pools[0]].byId
            guard !byId.isEmpty else { return nil }
            for step in 0..<byId.count {
                let h = byId[(turn + step) % byId.count]
                if allows(h) { return h }
            }
            return nil
        } else {
            var seen = Set<Handle>()
            ordered = pools.flatMap { index.pools[$0].byId }.filter { allows($0) && seen.insert($0).inserted }.sorted { index.idPrecedes($0, $1) }
        }
        return ordered.isEmpty ? nil : ordered[turn % ordered.count]
    }
}
