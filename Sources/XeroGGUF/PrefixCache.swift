import Foundation

/// KV state of recent prompts, in a radix tree over token ids, under a memory budget. A request
/// whose prompt shares a prefix with anything cached — the same system prompt from another user,
/// the earlier turns of a chat — starts from that prefix and computes only the rest.
///
/// Each node owns the keys and values of the positions on its edge, so branches share their
/// common prefix's memory. Eviction removes least-recently-used leaves until the tree fits the
/// budget. Only positions computed as part of a prompt batch are inserted (never tokens decoded
/// one at a time), and a lookup always leaves at least two prompt tokens to compute: the batch
/// kernels then see the same arithmetic as a cold run, so reuse never changes the output.
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

    public let budgetBytes: Int
    public static let blockSize = 32
    let layers: Int, kvDim: Int
    private let root = Node(tokens: [], keys: [], values: [])
    private var clock: UInt64 = 0
    public private(set) var bytes = 0
    private let lock = NSLock()

    public init(config: LlamaConfig, budgetBytes: Int) {
        self.budgetBytes = budgetBytes
        layers = config.layers
        kvDim = config.kvDim
    }

    /// How many leading tokens of `tokens` are cached (a lookup without side effects).
    public func cachedLength(_ tokens: [Int32]) -> Int { lock.withLock { walk(tokens).matched } }

    /// The longest cached prefix of `tokens` usable for this prompt, as a fresh cache ready to
    /// continue from (capacity `reserve`), or nil when nothing useful is cached.
    public func lookup(_ tokens: [Int32], reserve: Int) -> KVCache? {
        lock.withLock {
            let usable = max(0, tokens.count - 2)
            let (path, matched) = walk(tokens)
            let n = min(matched, usable)
            guard n > 0 else { return nil }
            clock += 1
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

    /// Remembers the first `count` positions of `cache` as the KV state of `tokens[..<count]`.
    public func insert(_ tokens: [Int32], count: Int, from cache: KVCache) {
        let count = min(count, cache.count, tokens.count)
        guard count > 0 else { return }
        lock.withLock {
            clock += 1
            var node = root
            var pos = 0
            while pos < count {
                node.lastUsed = clock
                guard let child = node.children[tokens[pos]] else {
                    let leaf = makeNode(tokens, from: pos, to: count, cache: cache)
                    leaf.parent = node
                    leaf.lastUsed = clock
                    node.children[tokens[pos]] = leaf
                    bytes += leaf.bytes
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
            publishHashes()
        }
    }

    /// Hashes of every complete `blockSize`-token block along cached paths (each hash covers the
    /// whole prefix up to the end of its block), for the router to prefer a worker that holds them.
    /// A snapshot taken when the tree last changed: reading it never waits behind an insert's
    /// copying (the worker reads it on its socket thread).
    public func blockHashes() -> [UInt64] { snapshotLock.withLock { snapshot } }

    private var snapshot: [UInt64] = []
    private let snapshotLock = NSLock()
    static let maxHashes = 1024

    /// Recomputes the snapshot; called with `lock` held, after the tree changed.
    private func publishHashes() {
        var out = Set<UInt64>()
        func visit(_ node: Node, hash: UInt64, position: Int) {
            var h = hash, pos = position
            for t in node.tokens {
                h = Self.mix(h, t)
                pos += 1
                if pos % Self.blockSize == 0 { out.insert(h) }
            }
            for c in node.children.values where out.count < Self.maxHashes { visit(c, hash: h, position: pos) }
        }
        visit(root, hash: 0xcbf2_9ce4_8422_2325, position: 0)
        let sorted = out.sorted()
        snapshotLock.withLock { snapshot = sorted }
    }

    /// The hash of the first `blocks` blocks of `tokens`, as `blockHashes` computes it.
    public static func blockHash(_ tokens: [Int32], blocks: Int) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for t in tokens.prefix(blocks * blockSize) { h = mix(h, t) }
        return h
    }

    static func mix(_ h: UInt64, _ t: Int32) -> UInt64 {
        var h = h
        for shift in stride(from: 0, to: 32, by: 8) { h = (h ^ UInt64((UInt32(bitPattern: t) >> UInt32(shift)) & 0xFF)) &* 0x100_0000_01b3 }
        return h
    }

    // MARK: tree maintenance

    /// The path of nodes matching `tokens` and how many tokens of each node's edge matched.
    private func walk(_ tokens: [Int32]) -> (path: [(Node, Int)], matched: Int) {
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

    private func evict() {
        while bytes > budgetBytes {
            var oldest: Node?
            func visit(_ n: Node) {
                if n.children.isEmpty, n !== root {
                    if oldest == nil || n.lastUsed < oldest!.lastUsed { oldest = n }
                }
                for c in n.children.values { visit(c) }
            }
            visit(root)
            guard let leaf = oldest, let parent = leaf.parent else { return }
            parent.children[leaf.tokens[0]] = nil
            bytes -= leaf.bytes
        }
    }
}
