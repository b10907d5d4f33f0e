import Foundation
import XeroCore

/// Which prompts an engine holds KV state for, as `PromptBlocks` hashes: what a worker reports to
/// the routers for prefix-aware placement (docs/routing.md, "Prefix-aware placement"). The prompts
/// an engine ran, most recent first, up to `capacityBlocks` distinct blocks in all: prompts that
/// share a prefix share its blocks, as a radix prefix cache shares a system prompt between the
/// questions asked after it. The least recently used prompts fall out first, freeing only the
/// blocks no other held prompt shares.
///
/// - The simulator's modelled cache *is* its ledger: a prompt's matched blocks are what it skips.
/// - The built-in engine caches token ids (`PrefixCache`); its ledger follows it by capacity (its
///   budget in blocks of about 64 tokens) and recency. It is an estimate of that cache, not a
///   copy: a router uses it to prefer, never to decide correctness.
public final class PromptLedger: @unchecked Sendable {
    private struct Entry {
        var blocks: [UInt64]
        var lastUsed: UInt64
    }

    public let capacityBlocks: Int
    private let lock = NSLock()
    /// Per hash: how many recorded prompts contain it (a prompt's hashes are its own prefixes).
    private var counts: [UInt64: Int] = [:]
    /// Prompts by their last block's hash (a prompt is identified by its whole prefix).
    private var entries: [UInt64: Entry] = [:]
    private var clock: UInt64 = 0

    public init(capacityBlocks: Int) { self.capacityBlocks = max(0, capacityBlocks) }

    /// How many leading blocks of `blocks` a recorded prompt covers.
    public func match(_ blocks: [UInt64]) -> Int {
        lock.withLock {
            // Hashes are cumulative: block k is held iff some prompt holds that exact prefix. The
            // longest held prefix is found by binary search (holding k implies holding k - 1).
            var lo = 0, hi = blocks.count
            while lo < hi {
                let mid = (lo + hi + 1) / 2
                if counts[blocks[mid - 1]] != nil { lo = mid } else { hi = mid - 1 }
            }
            return lo
        }
    }

    /// Records a prompt the engine now holds (its whole block list), evicting the least recently
    /// used prompts beyond the capacity (a scan of the prompts held: a few hundred at most).
    public func record(_ blocks: [UInt64]) {
        guard let last = blocks.last, capacityBlocks > 0 else { return }
        let kept = Array(blocks.prefix(capacityBlocks))
        lock.withLock {
            clock += 1
            let key = kept.last ?? last
            if entries[key] != nil {
                entries[key]!.lastUsed = clock
            } else {
                entries[key] = Entry(blocks: kept, lastUsed: clock)
                for h in kept { counts[h, default: 0] += 1 }
            }
            // Distinct blocks held (`counts`) over the capacity: the least recently used prompt goes.
            while counts.count > capacityBlocks, let victim = entries.min(by: { $0.value.lastUsed < $1.value.lastUsed }) {
                entries[victim.key] = nil
                for h in victim.value.blocks {
                    let n = (counts[h] ?? 1) - 1
                    counts[h] = n > 0 ? n : nil
                }
            }
        }
    }

    /// Every hash held, sorted, at most `limit` (the most recently used prompts first).
    public func hashes(limit: Int = WireLimits.maxPrefixHashes) -> [UInt64] {
        lock.withLock {
            if counts.count <= limit { return counts.keys.sorted() }
            var out = Set<UInt64>()
            for e in entries.values.sorted(by: { $0.lastUsed > $1.lastUsed }) {
                for h in e.blocks where out.count < limit { out.insert(h) }
                if out.count >= limit { break }
            }
            return out.sorted()
        }
    }
}
