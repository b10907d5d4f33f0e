import XeroCore

/// One tier's queued jobs, shared fairly by the projects in it (docs/routing.md, "Fairness").
/// Each project has its own FIFO; dispatches go round the projects that have work in turn, a
/// project taking `weight` dispatches per turn (deficit round-robin with a cost of one job). So a
/// project that floods the tier queues behind itself only: every other project with work is
/// served within one round, whatever the flood's depth. Bounded per project and in total.
struct TierQueue {
    private var queues: [String: FIFO<JobEnvelope>] = [:]
    /// Projects with queued work, in turn order.
    private var ring: [String] = []
    private var cursor = 0
    /// Dispatches left in the current project's turn.
    private var turnLeft = 0
    private(set) var count = 0
    /// Per-project share (default 1).
    var weight: (String) -> Int = { _ in 1 }

    var isEmpty: Bool { count == 0 }
    func depth(project: String) -> Int { queues[project]?.count ?? 0 }
    var projects: Int { ring.count }

    mutating func append(_ job: JobEnvelope) {
        activate(job.project)
        queues[job.project]!.append(job)
        count += 1
    }

    /// Back at the front of its project's queue (a job whose worker was lost before it started).
    mutating func prepend(_ job: JobEnvelope) {
        activate(job.project)
        queues[job.project]!.prepend(job)
        count += 1
    }

    private mutating func activate(_ project: String) {
        if queues[project] == nil {
            queues[project] = FIFO()
            // A newly active project takes its turn after the current one: no one waits more than a round.
            if ring.isEmpty { ring = [project]; cursor = 0; turnLeft = 0 } else { ring.insert(project, at: cursor + 1) }
        }
    }

    /// Where a job to dispatch is: its project's place in the turn order and its offset in that
    /// project's queue.
    struct Position: Equatable {
        var ringIndex: Int
        var offset: Int
    }

    /// The first job, in fair order from the project whose turn it is, that `servable` accepts
    /// (returning the worker for it). Looks at most `lookahead` jobs into each project's queue and
    /// `budget` jobs in all.
    func firstServable(lookahead: Int, budget: Int = 512, _ servable: (JobEnvelope) -> String?) -> (Position, String)? {
        guard !ring.isEmpty else { return nil }
        var looked = 0
        for step in 0..<ring.count {
            let i = (cursor + step) % ring.count
            let q = queues[ring[i]]!
            for offset in 0..<min(q.count, lookahead) {
                if let w = servable(q.element(at: offset)) { return (Position(ringIndex: i, offset: offset), w) }
                looked += 1
                if looked >= budget { return nil }
            }
        }
        return nil
    }

    /// How many jobs `matches` accepts, looking as far as `firstServable` does, stopping at `limit`.
    func count(lookahead: Int, budget: Int = 512, limit: Int, where matches: (JobEnvelope) -> Bool) -> Int {
        var n = 0, looked = 0
        for project in ring {
            let q = queues[project]!
            for offset in 0..<min(q.count, lookahead) {
                if matches(q.element(at: offset)) { n += 1; if n >= limit { return n } }
                looked += 1
                if looked >= budget { return n }
            }
        }
        return n
    }

    /// Takes the job at `p` and moves the turn on: the project whose job it was has used one of
    /// its turn's dispatches (a project skipped because nothing of it could run loses its turn).
    mutating func remove(at p: Position) -> JobEnvelope {
        let project = ring[p.ringIndex]
        if p.ringIndex != cursor || turnLeft <= 0 { cursor = p.ringIndex; turnLeft = max(1, weight(project)) }
        let job = queues[project]!.remove(at: p.offset)
        count -= 1
        turnLeft -= 1
        if queues[project]!.isEmpty {
            drop(at: cursor)
        } else if turnLeft == 0 {
            cursor = (cursor + 1) % ring.count
        }
        return job
    }

    /// A project with nothing queued leaves the turn order; the next one's turn starts.
    private mutating func drop(at i: Int) {
        let wasCurrent = i == cursor
        queues[ring[i]] = nil
        ring.remove(at: i)
        if i < cursor { cursor -= 1 }
        if ring.isEmpty { cursor = 0 } else { cursor %= ring.count }
        if wasCurrent { turnLeft = 0 }
    }

    /// Removes every job matching `predicate`; returns them.
    mutating func removeAll(where predicate: (JobEnvelope) -> Bool) -> [JobEnvelope] {
        var out: [JobEnvelope] = []
        var i = 0
        while i < ring.count {
            let removed = queues[ring[i]]!.removeAll(where: predicate)
            out += removed
            count -= removed.count
            if queues[ring[i]]!.isEmpty { drop(at: i) } else { i += 1 }
        }
        return out
    }

    /// True if any job's queue deadline has passed.
    func anyDue(now: Int64) -> Bool {
        for p in ring {
            let q = queues[p]!
            for i in 0..<q.count where q.element(at: i).queueDeadlineMs <= now { return true }
        }
        return false
    }
}
