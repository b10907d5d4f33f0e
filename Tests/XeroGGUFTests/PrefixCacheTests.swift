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
    func run(_ tokens: [Int32], _ pc: PrefixCache) throws -> ([Float], Int) {
        let (model, _, _) = try LlamaTests.load()
        let cache = pc.lookup(tokens, reserve: tokens.count + 8) ?? model.newCache()
        let cached = cache.count
        let logits = model.forward(Array(tokens[cached...]), cache: cache)
        pc.insert(tokens, count: tokens.count, from: cache)
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
        // Block hashes cover every cached full block.
        let long = try prompt(String(repeating: "Tell me about the sea and its waves. ", count: 8))
        _ = try run(long, pc)
        let hashes = Set(pc.blockHashes())
        for k in 1...(long.count / PrefixCache.blockSize) { XCTAssertTrue(hashes.contains(PrefixCache.blockHash(long, blocks: k)), "block \(k)") }
    }

    func testEvictionKeepsTheBudgetAndOutputStaysIdentical() throws {
        let (model, _, _) = try LlamaTests.load()
        let perToken = 2 * model.config.layers * model.config.kvDim * 2
        let pc = PrefixCache(config: model.config, budgetBytes: 40 * perToken)
        let a = try prompt("First question about apples?", system: "System prompt A, quite long to fill the cache up.")
        _ = try run(a, pc)
        XCTAssertGreaterThan(pc.cachedLength(a), 0)
        let b = try prompt("Second question about bananas?", system: "A different system prompt B that shares nothing.")
        _ = try run(b, pc)
        XCTAssertLessThanOrEqual(pc.bytes, pc.budgetBytes)
        // Only the template's opening, shared with b, survives of a.
        let shared = zip(a, b).prefix { $0 == $1 }.count
        XCTAssertEqual(pc.cachedLength(a), shared, "the least recently used prompt was evicted")
        let (la, ca) = try run(a, pc)
        XCTAssertEqual(ca, shared)
        XCTAssertEqual(la, try cold(a))
    }
}
