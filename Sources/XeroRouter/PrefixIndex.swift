import XeroCore

/// Which workers hold which prompt prefixes, indexed by block hash (`PromptBlocks`), for
/// prefix-aware placement (docs/routing.md, "Prefix-aware placement"). Pure state, owned by the
/// scheduler; workers are the scheduler's dense handles.
///
/// - **Reported**: the hashes each worker last sent (`WorkerMessage.prefixes`, with a heartbeat
///   when they changed). Every router gets the same reports, so every router sees the same state
///   within a heartbeat (250 ms).
/// - **Placed**: this router's own recent decisions — a job's blocks on the worker it was sent to,
///   for `placedTTLMs` — so a follow-up arriving before the worker's next report still finds it.
///   The worker records a prompt when the job starts, and its next report carries it to every
///   router.
/// - A worker that leaves or drains is removed at once: affinity never keeps a dead or draining
///   worker selectable.
///
/// A lookup (`forEachHolder`) finds the deepest block anyone holds, then visits each holder once
/// with the depth it holds. Hashes are cumulative (holding block k means holding the prefix up to
/// k), so the holders of block k+1 are among those of block k: a level with as many holders as the
/// next one adds nobody and is skipped. A lookup costs the prompt's blocks plus its holders times
/// the number of distinct depths (one to three in practice), never every worker times every block.
public struct PrefixIndex: Sendable {
    public typealias Worker = Int32
    public static let placedTTLMs: Int64 = 2_000

    private var holders: [UInt64: Set<Worker>] = [:]
    private var reported: [Worker: [UInt64]] = [:]
    /// hash → worker → until when this router's own placement counts.
    private var placed: [UInt64: [Worker: Int64]] = [:]
    private var placedOrder: [(atMs: Int64, worker: Worker, blocks: [UInt64])] = []
    private var placedHead = 0
    /// The largest worker handle seen (the size of a lookup's visited marks).
    private var maxWorker: Worker = -1

    public init() {}

    /// A worker's report replaces what it reported before.
    public mutating func report(worker: Worker, hashes: [UInt64]) {
        for h in reported[worker] ?? [] { drop(h, worker) }
        reported[worker] = hashes.isEmpty ? nil : hashes
        maxWorker = max(maxWorker, worker)
        for h in hashes { holders[h, default: []].insert(worker) }
    }

    /// This router sent a job with these blocks to `worker`. Blocks the worker reports already are
    /// not recorded again: its report is the better word on them (it may evict them meanwhile).
    public mutating func placed(worker: Worker, blocks: [UInt64], now: Int64) {
        expire(now: now)
        // Reports are prefix-closed: what it reports of these blocks is a leading run of them.
        var lo = 0, hi = blocks.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if holders[blocks[mid]]?.contains(worker) == true { lo = mid + 1 } else { hi = mid }
        }
        guard lo < blocks.count else { return }
        let fresh = Array(blocks[lo...])
        maxWorker = max(maxWorker, worker)
        let until = now + Self.placedTTLMs
        for h in fresh { placed[h, default: [:]][worker] = until }
        placedOrder.append((now, worker, fresh))
    }

    /// Forgets everything about a worker (it left, was lost, or drains).
    public mutating func remove(worker: Worker) {
        report(worker: worker, hashes: [])
        for (h, var ws) in placed where ws[worker] != nil {
            ws[worker] = nil
            placed[h] = ws.isEmpty ? nil : ws
        }
    }

    /// Calls `body` once per worker holding a prefix of `blocks`, with how many leading blocks it
    /// holds. Call `expire(now:)` first: the level skipping counts placements as live.
    public func forEachHolder(_ blocks: [UInt64], now: Int64, _ body: (Worker, Int) -> Void) {
        // Each level's holders, looked up once: up to the first block nobody holds.
        var levels: [(reported: Set<Worker>?, placed: [Worker: Int64]?, count: Int)] = []
        for h in blocks {
            let r = holders[h], p = placed[h]
            let n = (r?.count ?? 0) + (p?.count ?? 0)
            guard n > 0 else { break }
            levels.append((r, p, n))
        }
        guard !levels.isEmpty else { return }
        var visited = Bitset(count: Int(maxWorker) + 1)
        for level in stride(from: levels.count - 1, through: 0, by: -1) {
            // The same workers as the level under it: nobody new.
            if level < levels.count - 1 && levels[level].count == levels[level + 1].count { continue }
            for w in levels[level].reported ?? [] where visited.insert(Int(w)) { body(w, level + 1) }
            for (w, until) in levels[level].placed ?? [:] where until > now && visited.insert(Int(w)) { body(w, level + 1) }
        }
    }

    /// Per worker holding a prefix of `blocks`: how many leading blocks it holds.
    public func matches(_ blocks: [UInt64], now: Int64) -> [Worker: Int] {
        var out: [Worker: Int] = [:]
        forEachHolder(blocks, now: now) { out[$0] = $1 }
        return out
    }

    /// How many leading blocks of `blocks` one worker holds: a binary search, since holding block
    /// k means holding every block before it.
    public func depth(of worker: Worker, _ blocks: [UInt64], now: Int64) -> Int {
        var lo = 0, hi = blocks.count   // it holds blocks[..<lo]; not blocks[hi] onwards
        while lo < hi {
            let mid = (lo + hi) / 2
            if holds(worker, blocks[mid], now: now) { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    /// Hashes reported by a worker (placement's tie-break, ops, tests).
    public func reportedCount(_ worker: Worker) -> Int { reported[worker]?.count ?? 0 }

    private func holds(_ worker: Worker, _ h: UInt64, now: Int64) -> Bool {
        holders[h]?.contains(worker) == true || (placed[h]?[worker]).map { $0 > now } == true
    }

    private mutating func drop(_ h: UInt64, _ worker: Worker) {
        guard var ws = holders[h] else { return }
        ws.remove(worker)
        holders[h] = ws.isEmpty ? nil : ws
    }

    /// Removes this router's placements older than `placedTTLMs` (in order of placement).
    public mutating func expire(now: Int64) {
        while placedHead < placedOrder.count, placedOrder[placedHead].atMs + Self.placedTTLMs <= now {
            let p = placedOrder[placedHead]
            for h in p.blocks {
                if let until = placed[h]?[p.worker], until <= now {
                    placed[h]![p.worker] = nil
                    if placed[h]!.isEmpty { placed[h] = nil }
                }
            }
            placedHead += 1
        }
        if placedHead > 1024, placedHead * 2 > placedOrder.count {
            placedOrder.removeFirst(placedHead)
            placedHead = 0
        }
    }
}

/// Marks for small integers, a bit each.
private struct Bitset {
    private var words: [UInt64]
    init(count: Int) { words = [UInt64](repeating: 0, count: (count + 63) / 64) }
    /// Sets bit `i`; false if it was set already.
    mutating func insert(_ i: Int) -> Bool {
        let bit: UInt64 = 1 << UInt64(i & 63)
        if words[i >> 6] & bit != 0 { return false }
        words[i >> 6] |= bit
        return true
    }
}
