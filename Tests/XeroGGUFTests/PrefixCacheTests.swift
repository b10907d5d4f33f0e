import XCTest
@testable import XeroGGUF

/// Prefix reuse must never change the output: logits after a cached prefix equal a cold run's, bit for bit.
final class PrefixCacheTests: XCTestCase {
    func prompt(_ user: String, system: String = "You are a helpful assistant.", turns: [(String, String)] = []) throws -> [Int32] {
        let (_, tok, template) = try LlamaTests.load()
        var msgs = [ChatTemplate.Message(role: "system", content: system)]
        for (u, a) in turns { msgs += [.init(role: "user", content: u), .init(role: "assistant", content: a)] }
        msgs.append(.init(role: "user", content: user))
        return tok.encode(segments: template.render(msgs))
    }

    /// Runs `tokens` from the prefix cache (inserting the prompt afterwards) → (logits, cached tokens).
    func run(_ tokens: [Int32], _ pc: PrefixCache, partition: String = "project-a") throws -> ([Float], Int) {
        let (model, _, _) = try LlamaTests.load()
        let cache = pc.lookup(tokens, reserve: tokens.count + 8, partition: partition) ?? model.newCache()
        let cached = cache.count
        let logits = model.forward(Array(tokens[cached...]), cache: cache)
        pc.insert(tokens, count: tokens.count, from: cache, partition: partition)
        return (logits, cached)
    }

    func cold(_ tokens: [Int32]) throws -> [Float] {
        let (model, _, _) = try LlamaTests.load()
        return model.forward(tokens, cache: model.newCache())
    }

    func testSamePromptExtendedPromptAndOtherUsersReuseWithIdenticalLogits() throws {
        let (model, _, _) = try LlamaTests.load()
        let pc = PrefixCache(config: model.config, budgetBytes: 256 << 20)
        let first = try prompt("What is the capital of France?")
        let (l1, c1) = try run(first, pc)
        XCTAssertEqual(c1, 0)
        XCTAssertEqual(l1, try cold(first))
        // The same prompt again: all but the last two tokens come from the cache.
        let (l2, c2) = try run(first, pc)
        XCTAssertEqual(c2, first.count - 2)
        XCTAssertEqual(l2, l1)
        // The next chat turn: the whole first prompt is reused.
        let second = try prompt("And of Italy?", turns: [("What is the capital of France?", "The capital of France is Paris.")])
        let (l3, c3) = try run(second, pc)
        XCTAssertGreaterThanOrEqual(c3, first.count - 8)
        XCTAssertEqual(l3, try cold(second))
        // Another user with the same system prompt shares it.
        let other = try prompt("Tell me a joke.")
        let (l4, c4) = try run(other, pc)
        XCTAssertGreaterThan(c4, 10)
        XCTAssertEqual(l4, try cold(other))
    }

    func testEvictionKeepsTheBudgetAndOutputStaysIdentical() throws {
        let (model, _, _) = try LlamaTests.load()
        let perToken = 2 * model.config.layers * model.config.kvDim * 2
        let pc = PrefixCache(config: model.config, budgetBytes: 40 * perToken)
        let a = try prompt("First question about apples?", system: "System prompt A, quite long to fill the cache up.")
        _ = try run(a, pc)
        XCTAssertGreaterThan(pc.cachedLength(a, partition: "project-a"), 0)
        let b = try prompt("Second question about bananas?", system: "A different system prompt B that shares nothing.")
        _ = try run(b, pc)
        XCTAssertLessThanOrEqual(pc.bytes, pc.budgetBytes)
        // Only the template's opening, shared with b, survives of a.
        let shared = zip(a, b).prefix { $0 == $1 }.count
        XCTAssertEqual(pc.cachedLength(a, partition: "project-a"), shared, "the least recently used prompt was evicted")
        let (la, ca) = try run(a, pc)
        XCTAssertEqual(ca, shared)
        XCTAssertEqual(la, try cold(a))
    }

    // MARK: partitions (one per project: no project can probe another's prompts)

    func testPartitionsWithTheSameTokensDoNotShare() throws {
        let (model, _, _) = try LlamaTests.load()
        let pc = PrefixCache(config: model.config, budgetBytes: 256 << 20)
        let p = try prompt(String(repeating: "Tell me about the sea and its waves. ", count: 8))
        _ = try run(p, pc, partition: "A")
        XCTAssertEqual(pc.cachedLength(p, partition: "A"), p.count)
        XCTAssertEqual(pc.cachedLength(p, partition: "B"), 0, "B sees nothing A inserted")
        XCTAssertNil(pc.lookup(p, reserve: p.count, partition: "B"))
        XCTAssertEqual(pc.partitionCount, 1, "a lookup does not create a partition")
        // B computes cold (and gets the cold numbers), then has its own copy.
        let (lb, cb) = try run(p, pc, partition: "B")
        XCTAssertEqual(cb, 0)
        XCTAssertEqual(lb, try cold(p))
        XCTAssertEqual(pc.partitionCount, 2)
        XCTAssertEqual(pc.bytes(partition: "A"), pc.bytes(partition: "B"), "no memory shared across partitions")
        XCTAssertEqual(pc.bytes, pc.bytes(partition: "A") + pc.bytes(partition: "B"))
        // A still hits, bit-identically.
        let (la, ca) = try run(p, pc, partition: "A")
        XCTAssertEqual(ca, p.count - 2)
        XCTAssertEqual(la, lb)
        // The empty partition ("", what a job without a project uses) is a partition like any other.
        XCTAssertEqual(pc.cachedLength(p, partition: ""), 0)
    }

    func testEvictionAcrossPartitionsKeepsTheBudgetAndDropsEmptyPartitions() throws {
        let (model, _, _) = try LlamaTests.load()
        let perToken = 2 * model.config.layers * model.config.kvDim * 2
        let pc = PrefixCache(config: model.config, budgetBytes: 40 * perToken)
        let a = try prompt("First question about apples?", system: "System prompt A, quite long to fill the cache up.")
        let b = try prompt("Second question about bananas?", system: "A different system prompt B that shares nothing.")
        XCTAssertGreaterThan(a.count + b.count, 40)
        _ = try run(a, pc, partition: "A")
        XCTAssertEqual(pc.cachedLength(a, partition: "A"), a.count)
        // B's prompt does not fit beside A's: A's (older) leaf goes, and with it partition A.
        _ = try run(b, pc, partition: "B")
        XCTAssertLessThanOrEqual(pc.bytes, pc.budgetBytes)
        XCTAssertEqual(pc.cachedLength(a, partition: "A"), 0)
        XCTAssertEqual(pc.cachedLength(b, partition: "B"), b.count)
        XCTAssertEqual(pc.partitionCount, 1, "the emptied partition was dropped")
        // And back: now B is the least recently used.
        let (la, ca) = try run(a, pc, partition: "A")
        XCTAssertEqual(ca, 0)
        XCTAssertEqual(la, try cold(a))
        XCTAssertLessThanOrEqual(pc.bytes, pc.budgetBytes)
        XCTAssertEqual(pc.cachedLength(b, partition: "B"), 0)
        XCTAssertEqual(pc.partitionCount, 1)
        XCTAssertEqual(pc.bytes, pc.bytes(partition: "A"))
    }

    /// A tiny synthetic model shape, for structure tests that need no weights.
    static let tiny = LlamaConfig(layers: 2, embedding: 8, feedForward: 8, heads: 1, kvHeads: 1, headDim: 4, ropeDims: 4,
                                  ropeBase: 10000, rmsEps: 1e-5, contextLength: 512, vocab: 100)

    func synthetic(_ n: Int, fill: Float16) -> KVCache {
        let c = KVCache(config: Self.tiny, reserve: n)
        for l in 0..<c.layers { for i in 0..<(n * c.kvDim) { c.keys[l][i] = fill } }
        c.count = n
        return c
    }

    func testPartitionCountIsBoundedDroppingTheLeastRecentlyUsed() {
        let pc = PrefixCache(config: Self.tiny, budgetBytes: 1 << 20, maxPartitions: 3)
        let tokens: [Int32] = Array(1...10)
        for i in 0..<3 { pc.insert(tokens, count: 10, from: synthetic(10, fill: Float16(i)), partition: "p\(i)") }
        XCTAssertEqual(pc.partitionCount, 3)
        // p0 is used again, so p1 is now the least recently used.
        let hit = pc.lookup(tokens, reserve: 16, partition: "p0")
        XCTAssertEqual(hit?.count, 8)
        withExtendedLifetime(hit) { XCTAssertEqual(hit?.keys[0][0], 0, "the partition's own KV state") }
        pc.insert(tokens, count: 10, from: synthetic(10, fill: 3), partition: "p3")
        XCTAssertEqual(pc.partitionCount, 3)
        XCTAssertEqual(pc.cachedLength(tokens, partition: "p1"), 0, "least recently used partition dropped whole")
        XCTAssertEqual(pc.cachedLength(tokens, partition: "p0"), 10)
        XCTAssertEqual(pc.cachedLength(tokens, partition: "p2"), 10)
        let p3 = pc.lookup(tokens, reserve: 16, partition: "p3")
        withExtendedLifetime(p3) { XCTAssertEqual(p3?.keys[0][0], 3) }
        XCTAssertEqual(pc.bytes, 3 * pc.bytes(partition: "p0"), "a dropped partition's bytes are released")
        // A flood of projects stays at the bound.
        for i in 0..<100 { pc.insert(tokens, count: 10, from: synthetic(10, fill: 1), partition: "flood-\(i)") }
        XCTAssertEqual(pc.partitionCount, 3)
        XCTAssertEqual(pc.bytes, 3 * pc.bytes(partition: "flood-99"))
    }

    func testDefaultPartitionBound() {
        XCTAssertEqual(PrefixCache(config: Self.tiny, budgetBytes: 1 << 20).maxPartitions, 4096)
    }
}
