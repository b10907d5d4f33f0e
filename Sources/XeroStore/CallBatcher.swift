import XeroCore

/// Turns concurrent calls into batches: calls that arrive while `concurrency` batches are already
/// running wait, and go together in the next one (at most `maxBatch`). Under load this is one
/// round trip (one script call) for many callers; when idle, a call goes at once, alone — nothing
/// waits for company. With `maxBatch` 1 every call runs on its own.
public final class CallBatcher<Call: Sendable, Result: Sendable>: Sendable {
    public typealias Run = @Sendable ([Call]) async throws -> [Result]

    private struct Waiting {
        var call: Call
        var continuation: CheckedContinuation<Result, Error>
    }
    private struct State {
        var waiting: [Waiting] = []
        var running = 0
    }

    private let state = Locked(State())
    private let maxBatch: Int
    private let concurrency: Int
    private let runBatch: Run

    public init(maxBatch: Int, concurrency: Int, run: @escaping Run) {
        self.maxBatch = max(1, maxBatch)
        self.concurrency = max(1, concurrency)
        self.runBatch = run
    }

    public func run(_ call: Call) async throws -> Result {
        if maxBatch == 1 { return try await runBatch([call])[0] }
        return try await withCheckedThrowingContinuation { cont in
            let start = state.withLock { s -> Bool in
                s.waiting.append(Waiting(call: call, continuation: cont))
                guard s.running < concurrency else { return false }
                s.running += 1
                return true
            }
            if start { Task { await self.drain() } }
        }
    }

    /// Runs batches until nothing waits; one of at most `concurrency` drainers.
    private func drain() async {
        while true {
            let batch = state.withLock { s -> [Waiting] in
                let b = Array(s.waiting.prefix(maxBatch))
                s.waiting.removeFirst(b.count)
                if b.isEmpty { s.running -= 1 }
                return b
            }
            if batch.isEmpty { return }
            do {
                let results = try await runBatch(batch.map(\.call))
                guard results.count == batch.count else { throw RedisError("batched call: \(results.count) results for \(batch.count) calls") }
                for (w, r) in zip(batch, results) { w.continuation.resume(returning: r) }
            } catch {
                for w in batch { w.continuation.resume(throwing: error) }
            }
        }
    }
}
