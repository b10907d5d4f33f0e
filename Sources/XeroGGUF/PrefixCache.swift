import Foundation

/// KV state of recent prompts, in radix trees over token ids, under a memory budget. A request
/// whose prompt shares a prefix with anything cached in its partition — the same system prompt
/// from another user of the project, the earlier turns of a chat — starts from that prefix and
/// computes only the rest.
///
/// **Partitions.** Every call names a partition (the engine uses the job's project id) and only
/// ever sees that partition's tree: a lookup in partition B never matches a prefix inserted in
/// partition A, so one tenant cannot learn from `cached_tokens` or time-to-first-token whether
/// another sent a given prompt. The partitions share one memory budget and one LRU clock:
/// eviction removes the least-recently-used leaf of any partition until the total fits, a
/// partition whose last node is evicted is dropped, and beyond `maxPartitions` (4,096 by
/// default) the least-recently-used partition is dropped whole — a flood of projects costs at
/// most the budget plus a bounded number of empty roots.
///
/// Each node owns the keys and values of the positions on its edge, so branches share their
/// common prefix's memory (within a partition). Only positions computed as part of a prompt batch
/// are inserted (never tokens decoded one at a time), and a lookup always leaves at least two
/// prompt tokens to compute: the batch kernels then see the same arithmetic as a cold run, so
/// reuse never changes the output.
///
/// What a worker reports of this cache to the routers is not its token ids but the prompts' text
/// blocks (`PromptBlocks`, through the engine's `PromptLedger`): a router has no tokenizer.
public final class PrefixCache: @unchecked Sendable {
    final class Node {
        var tokens: [Int32]
        /// Per layer: keys [tokens × kvDim] (position-major) and values [tokens × kvDim] (position-major).
        var keys: [[Float16]]
        var values: [[Float16]]
        var children: [Int32: Node] = [:]
        weak var parent: Node?
        var lastUsed: UInt64 = 0
        init(tokens: [Int32], keys: [[Float16]], values: [[Float16]]) {
            self.tokens = tokens
            self.keys = keys
            self.values = values
        }
        var bytes: Int { (keys.reduce(0) { $0 + $1.count } + values.reduce(0) { $0 + $1.count }) * 2 }
    }

    /// One partition's tree (its root holds no tokens).
    final class Partition {
        let key: String
        let root = Node(tokens: [], keys: [], values: [])
        var lastUsed: UInt64 = 0
        var bytes = 0
        init(key: String) { self.key = key }
    }

    public let budgetBytes: Int
    /// Most partitions kept at once; a new one beyond this drops the least recently used whole.
    public let maxPartitions: Int
    public static let defaultMaxPartitions = 4096
    let layers: Int, kvDim: Int
    private var partitions: [String: Partition] = [:]
    private var clock: UInt64 = 0
    public private(set) var bytes = 0
    private let lock = NSLock()

    public init(config: LlamaConfig, budgetBytes: Int, maxPartitions: Int = PrefixCache.defaultMaxPartitions) {
        self.budgetBytes = budgetBytes
        self.maxPartitions = max(1, maxPartitions)
        layers = config.layers
        kvDim = config.kvDim
    }

    /// Bytes of KV state held, all partitions (read under the lock: any thread may ask).
    public var usedBytes: Int { lock.withLock { bytes } }

    /// How many partitions hold anything.
    public var partitionCount: Int { lock.withLock { partitions.count } }

    /// Bytes held by one partition (0 when it holds nothing).
    public func bytes(partition: String) -> Int { lock.withLock { partitions[partition]?.bytes ?? 0 } }

    /// How many leading tokens of `tokens` are cached in `partition` (a lookup without side effects).
    public func cachedLength(_ tokens: [Int32], partition: String) -> Int {
        lock.withLock {
            guard let p = partitions[partition] else { return 0 }
            return walk(tokens, from: p.root).matched
        }
    }

    /// The longest prefix of `tokens` cached in `partition` usable for this prompt, as a fresh
    /// cache ready to continue from (capacity `reserve`), or nil when nothing useful is cached.
    public func lookup(_ tokens: [Int32], reserve: Int, partition: String) -> KVCache? {
        lock.withLock {
            guard let part = partitions[partition] else { return nil }
            let usable = max(0, tokens.count - 2)
            let (path, matched) = walk(tokens, from: part.root)
            let n = min(matched, usable)
            guard n > 0 else { return nil }
            clock += 1
            part.lastUsed = clock
            let cache = KVCache(layers: layers, kvDim: kvDim, reserve: max(reserve, n))
            var pos = 0
            for (node, take) in path {
                node.lastUsed = clock
                let m = min(take, n - pos)
                if m <= 0 { break }
                for l in 0..<layers {
                    node.keys[l].withUnsafeBufferPointer { (cache.keys[l] + pos * kvDim).update(from: $0.baseAddress!, count: m * kvDim) }
                    node.values[l].withUnsafeBufferPointer { vb in
                        for p in 0..<m {
                            for d in 0..<kvDim { cache.values[l][d * cache.capacity + pos + p] = vb[p * kvDim + d] }
                        }
                    }
                }
                pos += m
            }
            cache.count = n
            return cache
        }
    }

    /// Remembers the first `count` positions of `cache` as the KV state of `tokens[..<count]` in `partition`.
    public func insert(_ tokens: [Int32], count: Int, from cache: KVCache, partition: String) {
        let count = min(count, cache.count, tokens.count)
        guard count > 0 else { return }
        lock.withLock {
            clock += 1
            let part = partitions[partition] ?? newPartition(partition)
            part.lastUsed = clock
            var node = part.root
            var pos = 0
            while pos < count {
                node.lastUsed = clock
                guard let child = node.children[tokens[pos]] else {
                    let leaf = makeNode(tokens, from: pos, to: count, cache: cache)
                    leaf.parent = node
                    leaf.lastUsed = clock
                    node.children[tokens[pos]] = leaf
                    bytes += leaf.bytes
                    part.bytes += leaf.bytes
                    break
                }
                // Follow the edge as far as it agrees.
                var k = 0
                while k < child.tokens.count && pos + k < count && child.tokens[k] == tokens[pos + k] { k += 1 }
                if k < child.tokens.count { split(child, at: k) }
                node = child
                pos += k
            }
            node.lastUsed = clock
            evict()
        }
    }

    // MARK: tree maintenance

    /// The path of nodes matching `tokens` and how many tokens of each node's edge matched.
    private func walk(_ tokens: [Int32], from root: Node) -> (path: [(Node, Int)], matched: Int) {
        var node = root, pos = 0
        var path: [(Node, Int)] = []
        while pos < tokens.count, let child = node.children[tokens[pos]] {
            var k = 0
            while k < child.tokens.count && pos + k < tokens.count && child.tokens[k] == tokens[pos + k] { k += 1 }
            path.append((child, k))
            pos += k
            if k < child.tokens.count { break }
            node = child
        }
        return (path, pos)
    }

    private func makeNode(_ tokens: [Int32], from a: Int, to b: Int, cache: KVCache) -> Node {
        let n = b - a
        var keys: [[Float16]] = [], values: [[Float16]] = []
        for l in 0..<layers {
            keys.append(Array(UnsafeBufferPointer(start: cache.keys[l] + a * kvDim, count: n * kvDim)))
            var v = [Float16](repeating: 0, count: n * kvDim)
            for p in 0..<n { for d in 0..<kvDim { v[p * kvDim + d] = cache.values[l][d * cache.capacity + a + p] } }
            values.append(v)
        }
        return Node(tokens: Array(tokens[a..<b]), keys: keys, values: values)
    }

    /// Splits `node`'s edge after `k` tokens: `node` keeps the head, a new child takes the tail.
    private func split(_ node: Node, at k: Int) {
        let tail = Node(tokens: Array(node.tokens[k...]),
                        keys: node.keys.map { Array($0[(k * kvDim)...]) },
                        values: node.values.map { Array($0[(k * kvDim)...]) })
        tail.children = node.children
        for c in tail.children.values { c.parent = tail }
        tail.parent = node
        tail.lastUsed = node.lastUsed
        node.tokens = Array(node.tokens[..<k])
        node.keys = node.keys.map { Array($0[..<(k * kvDim)]) }
        node.values = node.values.map { Array($0[..<(k * kvDim)]) }
        node.children = [tail.tokens[0]: tail]
    }

    /// A new empty partition, first dropping the least recently used one whole when at the bound.
    private func newPartition(_ key: String) -> Partition {
        while partitions.count >= maxPartitions, let oldest = partitions.values.min(by: { $0.lastUsed < $1.lastUsed }) {
            drop(oldest)
        }
        let p = Partition(key: key)
        partitions[key] = p
        return p
    }

    private func drop(_ p: Partition) {
        bytes -= p.bytes
        p.bytes = 0
        p.root.children = [:]
        partitions[p.key] = nil
    }

    /// Removes least-recently-used leaves, whatever their partition, until the total fits the
    /// budget; a partition left empty is dropped.
    private func evict() {
        while bytes > budgetBytes {
            var oldest: (leaf: Node, partition: Partition)?
            func visit(_ n: Node, _ p: Partition) {
                if n.children.isEmpty, n !== p.root {
                    if oldest == nil || n.lastUsed < oldest!.leaf.lastUsed { oldest = (n, p) }
                }
                for c in n.children.values { visit(c, p) }
            }
            for p in partitions.values { visit(p.root, p) }
            guard let found = oldest, let parent = found.leaf.parent else { return }
            let leaf = found.leaf, part = found.partition
            parent.children[leaf.tokens[0]] = nil
            bytes -= leaf.bytes
            part.bytes -= leaf.bytes
            if part.root.children.isEmpty { drop(part) }
        }
    }
}
