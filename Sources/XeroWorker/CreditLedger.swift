/// How a worker's free slots are spread as credits over the routers it is connected to
/// (docs/routing.md, "Credits across routers"). Pure state, no I/O: the worker's loop drives it
/// and sends what `rebalance` and `jobEnded` return; `CreditLedgerTests` drive it directly.
///
/// Invariant 1: `running + Σ granted + inHand == slots`, and a job is run only against a credit
/// its router was granted, so the worker never runs more jobs than it has slots.
/// Invariant 2: credits in hand never stay in hand while a router is up; a router that reports
/// demand above what it holds gets the next free credit (round-robin among such routers), and
/// unused credits are reclaimed from routers without demand when there is none in hand.
public struct CreditLedger: Sendable, Equatable {
    public enum Action: Sendable, Equatable {
        /// Send `credit(n)` to this router.
        case credit(link: Int, n: Int)
        /// Send `reclaim(n)` to this router.
        case reclaim(link: Int, n: Int)
    }

    public enum Arrival: Sendable, Equatable {
        /// Run it: it took one of the router's credits.
        case run
        /// The router held no credit of ours (its credits were voided when it was thought down):
        /// answer `done(requeue)`, and the router queues it again.
        case requeue
    }

    public struct Link: Sendable, Equatable {
        /// Helloed and heard from: it may hold credits.
        public var up = false
        /// Credits it holds and has not spent, as far as this worker knows.
        public var granted = 0
        /// How many queued jobs it says it has for us (capped at our slots).
        public var demand = 0
        /// A `reclaim` is on its way: no second one until it is answered.
        public var reclaiming = false
    }

    public let slots: Int
    public private(set) var running = 0
    public private(set) var links: [Link]
    public var draining = false
    /// Round-robin start among routers with unmet demand (fair across routers, per credit).
    private var cursor = 0

    public init(slots: Int, links: Int) {
        self.slots = slots
        self.links = Array(repeating: Link(), count: links)
    }

    public var inHand: Int { slots - running - links.reduce(0) { $0 + $1.granted } }

    /// A router link came up (first contact, or back after it was down or restarted): it gets a
    /// share of the credits in hand. Returns the `free` to put in its `hello` (exactly what it
    /// holds from then on), and reclaims that even out what the other routers hold beyond their
    /// share (what comes back goes to the router holding fewest: this one).
    public mutating func linkUp(_ link: Int) -> (free: Int, actions: [Action]) {
        links[link] = Link(up: true)
        guard !draining else { return (0, []) }
        let upLinks = links.indices.filter { links[$0].up }
        let evenShare = max(1, (slots - running + upLinks.count - 1) / upLinks.count)
        let share = min(inHand, evenShare)
        links[link].granted = share
        var actions: [Action] = []
        var missing = evenShare - share
        for i in upLinks where i != link && missing > 0 && !links[i].reclaiming && links[i].granted > evenShare {
            let n = min(links[i].granted - evenShare, missing)
            links[i].reclaiming = true
            missing -= n
            actions.append(.reclaim(link: i, n: n))
        }
        return (share, actions)
    }

    /// A router link went down (silent) or its router restarted: whatever it held is void.
    public mutating func linkDown(_ link: Int) {
        links[link] = Link()
    }

    /// A job arrived from `link`.
    public mutating func jobArrived(from link: Int) -> Arrival {
        guard links[link].up, links[link].granted > 0 else { return .requeue }
        links[link].granted -= 1
        running += 1
        return .run
    }

    /// A job ended; it was relayed by `relay` (nil: its relay is down or gone). Returns whether
    /// its credit goes back to that router with the `done` report, and any other credit to send.
    public mutating func jobEnded(relay: Int?) -> (returnsCredit: Bool, actions: [Action]) {
        running -= 1
        guard !draining else { return (false, []) }
        if let relay, links[relay].up, pickLink(preferring: relay) == relay {
            grant(relay)
            return (true, rebalance())
        }
        return (false, rebalance())
    }

    /// The router's demand, from its `ack`.
    public mutating func demand(_ link: Int, _ n: Int) -> [Action] {
        guard links[link].up else { return [] }
        links[link].demand = n
        return rebalance()
    }

    /// The answer to a reclaim: `n` credits are in hand again.
    public mutating func returned(_ link: Int, _ n: Int) -> [Action] {
        guard links[link].up else { return [] }
        links[link].granted -= min(n, links[link].granted)
        links[link].reclaiming = false
        return rebalance()
    }

    /// Which up link the next free credit should go to: a router whose demand exceeds what it
    /// holds (round-robin from the cursor), else the one holding the fewest (an even spread),
    /// `preferring` on ties.
    private func pickLink(preferring: Int? = nil) -> Int? {
        let up = links.indices.filter { links[$0].up }
        guard !up.isEmpty else { return nil }
        let needy = up.filter { links[$0].demand > links[$0].granted }
        if !needy.isEmpty {
            if let preferring, needy.contains(preferring), needy.count == 1 { return preferring }
            return needy.min { a, b in ((a - cursor + links.count) % links.count) < ((b - cursor + links.count) % links.count) }
        }
        let fewest = up.map { links[$0].granted }.min()!
        if let preferring, up.contains(preferring), links[preferring].granted == fewest { return preferring }
        return up.first { links[$0].granted == fewest }
    }

    /// One credit to `link`; a router with unmet demand that gets it moves the round-robin past it.
    private mutating func grant(_ link: Int) {
        if links[link].demand > links[link].granted { cursor = (link + 1) % links.count }
        links[link].granted += 1
    }

    /// Hands out every credit in hand, then, if routers still want more than they hold and none
    /// is in hand, asks routers holding unused credits for them back.
    public mutating func rebalance() -> [Action] {
        guard !draining else { return [] }
        var given = [Int: Int]()
        while inHand > 0, let link = pickLink() {
            grant(link)
            given[link, default: 0] += 1
        }
        var actions = given.keys.sorted().map { Action.credit(link: $0, n: given[$0]!) }
        var unmet = links.filter(\.up).reduce(0) { $0 + max(0, $1.demand - $1.granted) }
        if unmet > 0 {
            for i in links.indices where unmet > 0 && links[i].up && !links[i].reclaiming && links[i].granted > links[i].demand {
                let n = min(links[i].granted - links[i].demand, unmet)
                links[i].reclaiming = true
                unmet -= n
                actions.append(.reclaim(link: i, n: n))
            }
        }
        return actions
    }
}
