import XeroCore

/// Chooses which of the workers that can take a job gets it (docs/routing.md, "Placement").
/// The config chooses one per tier (`placement:`); each is a type behind this protocol.
public protocol PlacementPolicy: Sendable {
    var name: String { get }
    /// `among`: workers with a credit here that may run the job; nil when there is none. Read it
    /// in load order or by id (`Candidates`); a policy that lists every candidate costs O(workers) a job.
    func choose(job: JobEnvelope, among candidates: Candidates, context: PlacementContext) -> Candidates.Handle?
}

/// What a policy may consult besides the candidates: the prefix index, the time, and a counter
/// that advances with every dispatch (round-robin's turn).
public struct PlacementContext {
    public var index: PrefixIndex
    public var now: Int64
    public var turn: Int
    public init(index: PrefixIndex, now: Int64, turn: Int) {
        self.index = index
        self.now = now
        self.turn = turn
    }
}

public enum Placements {
    /// The policy a tier's config names, with its parameters; nil for an unknown name.
    public static func named(_ name: String, loadWeight: Double? = nil, maxImbalance: Double? = nil) -> (any PlacementPolicy)? {
        switch name {
        case "least_loaded": return LeastLoadedPlacement()
        case "round_robin": return RoundRobinPlacement()
        case "prefix_aware":
            return PrefixAwarePlacement(loadWeight: loadWeight ?? PrefixAwarePlacement.defaultLoadWeight,
                                        maxImbalance: maxImbalance ?? PrefixAwarePlacement.defaultMaxImbalance)
        default: return nil
        }
    }

    /// The policy of a tier (nil when its config names none: the scheduler's default).
    public static func policy(for tier: Tier) -> (any PlacementPolicy)? {
        tier.placement.flatMap { named($0, loadWeight: tier.placementLoadWeight, maxImbalance: tier.placementMaxImbalance) }
    }
}

/// The least-loaded candidate: the lowest running jobs over slots, as the worker reports them (all
/// routers' jobs, plus what this router sent since), not this router's share. Ties go to the worker
/// holding the fewest prompt blocks, then by id. A heap read (`Candidates.leastLoaded`).
public struct LeastLoadedPlacement: PlacementPolicy {
    public init() {}
    public var name: String { "least_loaded" }
    public func choose(job: JobEnvelope, among candidates: Candidates, context: PlacementContext) -> Candidates.Handle? {
        candidates.leastLoaded()
    }
}

/// The candidates in id order, one after the other: each dispatch takes the next.
public struct RoundRobinPlacement: PlacementPolicy {
    public init() {}
    public var name: String { "round_robin" }
    public func choose(job: JobEnvelope, among candidates: Candidates, context: PlacementContext) -> Candidates.Handle? {
        candidates.inIdOrder(turn: context.turn)
    }
}

/// Prefers the worker that holds the job's prompt prefix, unless that would pile work onto it.
/// Score = matched fraction of the prompt's blocks − `loadWeight` × load, where load is the
/// worker's running jobs over its slots as the worker itself reports them (all routers' jobs
/// together, plus what this router sent since the report) — not one router's share of it.
///
/// Guards (docs/routing.md, "Prefix-aware placement"):
/// - A worker more than `maxImbalance` busier than the least-loaded candidate gets no credit for
///   its cache: it competes on load alone. Locality is kept wherever it does not unbalance, rather
///   than dropped for everyone once some worker is busy.
/// - Load counts a job from the moment it is dispatched (not when its stream starts).
/// - Draining and departed workers are not candidates, and the index forgets them.
///
/// Equal scores (a prompt nobody holds, equally loaded workers) go to the worker holding the fewest
/// prompt blocks: new prompts spread over the caches with room before any evicts.
///
/// Cost: a worker that holds none of the prompt scores `-loadWeight × load`, so the best of those
/// is the least-loaded candidate (a heap read). Only the prompt's holders are scored one by one.
public struct PrefixAwarePlacement: PlacementPolicy {
    public static let defaultLoadWeight = 0.5
    public static let defaultMaxImbalance = 0.75
    public let loadWeight: Double
    public let maxImbalance: Double
    public init(loadWeight: Double = defaultLoadWeight, maxImbalance: Double = defaultMaxImbalance) {
        self.loadWeight = loadWeight
        self.maxImbalance = maxImbalance
    }
    public var name: String { "prefix_aware" }

    public func choose(job: JobEnvelope, among candidates: Candidates, context: PlacementContext) -> Candidates.Handle? {
        guard let least = candidates.leastLoaded() else { return nil }
        let blocks = job.prefixBlocks
        guard !blocks.isEmpty else { return least }
        let leastLoad = candidates.load(least)
        let n = Double(blocks.count)
        var best = (score: -loadWeight * leastLoad, handle: least)
        context.index.forEachHolder(blocks, now: context.now) { h, depth in
            guard candidates.contains(h) else { return }
            let load = candidates.load(h)
            let m = load <= leastLoad + maxImbalance ? Double(depth) / n : 0
            let score = m - loadWeight * load
            // Equal scores: the placement order (load, blocks held, id).
            if score < best.score || (score == best.score && !candidates.precedes(h, best.handle)) { return }
            best = (score, h)
        }
        return best.handle
    }
}
