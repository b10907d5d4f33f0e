import XeroCore

/// Which workers hold which prompt prefixes, indexed by block hash (`PromptBlocks`), for
/// prefix-aware placement (docs/routing.md, "Prefix-aware placement"). Pure state, owned by the
/// scheduler.
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
/// A lookup walks the job's blocks from the first and stops at the first block nobody holds
/// (hashes are cumulative: holding block k means holding the prefix up to k), so it costs the
/// matched blocks times their holders, never every worker times every block.
public struct PrefixIndex: Sendable {
    public static let placedTTLMs: Int64 = 2_000

    private var holders: [UInt64: Set<String>] = [:]
    private var reported: [String: [UInt64]] = [:]
    /// hash → worker → until when this router's own placement counts.
    private var placed: [UInt64: [String: Int64]] = [:]
    private var placedOrder: [(atMs: Int64, worker: String, blocks: [UInt64])] = []
    private var placedHead = 0

    public init() {}

    /// A worker's report replaces what it reported before.
    public mutating func report(worker: String, hashes: [UInt64]) {
        for h in reported[worker] ?? [] { drop(h, worker) }
        reported[worker] = hashes.isEmpty ? nil : hashes
        for h in hashes { holders[h, default: []].insert(worker) }
    }

    /// This router sent a job with these blocks to `worker`.
    public mutating func placed(worker: String, blocks: [UInt64], now: Int64) {
        expire(now: now)
        guard !blocks.isEmpty else { return }
        let until = now + Self.placedTTLMs
        for h in blocks { placed[h, default: [:]][worker] = until }
        placedOrder.append((now, worker, blocks))
    }

    /// Forgets everything about a worker (it left, was lost, or drains).
    public mutating func remove(worker: String) {
        report(worker: worker, hashes: [])
        for (h, var ws) in placed where ws[worker] != nil {
            ws[worker] = nil
            placed[h] = ws.isEmpty ? nil : ws
        }
    }

    /// Per worker holding a prefix of `blocks`: how many leading blocks it holds.
    public func matches(_ blocks: [UInt64], now: Int64) -> [String: Int] {
        var out: [String: Int] = [:]
        for (i, h) in blocks.enumerated() {
            var any = false
            if let ws = holders[h] { for w in ws { out[w] = i + 1 }; any = !ws.isEmpty }
            if let ws = placed[h] { for (w, until) in ws where until > now { out[w] = i + 1; any = true } }
            if !any { break }
        }
        return out
    }

    /// Hashes reported by a worker (ops, tests).
    public func reportedCount(_ worker: String) -> Int { reported[worker]?.count ?? 0 }

    private mutating func drop(_ h: UInt64, _ worker: String) {
        guard var ws = holders[h] else { return }
        ws.remove(worker)
        holders[h] = ws.isEmpty ? nil : ws
    }

    /// Removes this router's placements older than `placedTTLMs` (in order of placement).
    private mutating func expire(now: Int64) {
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
