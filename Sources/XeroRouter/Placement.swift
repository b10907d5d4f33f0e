import XeroCore

/// Chooses which of the workers that can take a job gets it (docs/routing.md, "Placement").
/// The config chooses one per tier (`placement:`); each is a type behind this protocol.
public protocol PlacementPolicy: Sendable {
    var name: String { get }
    /// `among` is never empty: workers with a credit here that may run the job.
    func choose(job: JobEnvelope, among workers: [TierScheduler.Worker], context: PlacementContext) -> String?
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

/// The worker with the largest free fraction of this router's credits for it; ties by id, for
/// determinism. (So sequential requests land on the same idle worker: placement by luck, not
/// by cache.)
public struct LeastLoadedPlacement: PlacementPolicy {
    public init() {}
    public var name: String { "least_loaded" }
    public func choose(job: JobEnvelope, among workers: [TierScheduler.Worker], context: PlacementContext) -> String? {
        workers.max { a, b in
            let fa = Double(a.credits) / Double(max(1, a.info.slots)), fb = Double(b.credits) / Double(max(1, b.info.slots))
            return fa != fb ? fa < fb : a.info.id > b.info.id
        }?.info.id
    }
}

/// The candidates in id order, one after the other: each dispatch takes the next.
public struct RoundRobinPlacement: PlacementPolicy {
    public init() {}
    public var name: String { "round_robin" }
    public func choose(job: JobEnvelope, among workers: [TierScheduler.Worker], context: PlacementContext) -> String? {
        guard !workers.isEmpty else { return nil }
        let ids = workers.map(\.info.id).sorted()
        return ids[context.turn % ids.count]
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
public struct PrefixAwarePlacement: PlacementPolicy {
    public static let defaultLoadWeight = 0.5
    public static let defaultMaxImbalance = 0.5
    public let loadWeight: Double
    public let maxImbalance: Double
    public init(loadWeight: Double = defaultLoadWeight, maxImbalance: Double = defaultMaxImbalance) {
        self.loadWeight = loadWeight
        self.maxImbalance = maxImbalance
    }
    public var name: String { "prefix_aware" }

    public func choose(job: JobEnvelope, among workers: [TierScheduler.Worker], context: PlacementContext) -> String? {
        guard let least = workers.map(\.load).min() else { return nil }
        let blocks = job.prefixBlocks
        let matched = blocks.isEmpty ? [:] : context.index.matches(blocks, now: context.now)
        var best: (score: Double, load: Double, held: Int, id: String)?
        for w in workers {
            let load = w.load
            let m = load <= least + maxImbalance ? Double(matched[w.info.id] ?? 0) / Double(max(1, blocks.count)) : 0
            let score = m - loadWeight * load
            let held = context.index.reportedCount(w.info.id)
            if let b = best {
                if score != b.score { if score < b.score { continue } }
                else if load != b.load { if load > b.load { continue } }
                else if held != b.held { if held > b.held { continue } }
                else if w.info.id >= b.id { continue }
            }
            best = (score, load, held, w.info.id)
        }
        return best?.id
    }
}
