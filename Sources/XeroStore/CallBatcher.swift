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
        /// Lanes busy running a batch (at most `concurrency`).
        var running = 0

        mutating func take(_ n: Int) -> [Waiting] {
            let b = Array(waiting.prefix(n))
            waiting.removeFirst(b.count)
            return b
        }
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
        // A caller that finds a free lane runs the batch itself — its own call plus whatever
        // waits — in its own task: under light load a call costs no hop to another task.
        let others: [Waiting]? = state.withLock { s in
            guard s.running < concurrency else { return nil }
            s.running += 1
            return s.take(maxBatch - 1)
        }
        if let others {
            let results: [Result]
            do {
                results = try await runBatch([call] + others.map(\.call))
                guard results.count == others.count + 1 else { throw RedisError("batched call: \(results.count) results for \(others.count + 1) calls") }
            } catch {
                for w in others { w.continuation.resume(throwing: error) }
                handOn()
                throw error
            }
            for (w, r) in zip(others, results.dropFirst()) { w.continuation.resume(returning: r) }
            handOn()
            return results[0]
        }
        return try await withCheckedThrowingContinuation { (cont: CheckedContinuation<Result, Error>) in
            let lead = state.withLock { s -> Bool in
                s.waiting.append(Waiting(call: call, continuation: cont))
                guard s.running < concurrency else { return false }   // a lane freed meanwhile
                s.running += 1
                return true
            }
            if lead { Task { await self.drain() } }
        }
    }

    /// A lane's batch is done: keep the lane for whatever waits (in a task of its own), or free it.
    private func handOn() {
        let more = state.withLock { s -> Bool in
            if s.waiting.isEmpty { s.running -= 1; return false }
            return true
        }
        if more { Task { await self.drain() } }
    }

    /// Runs batches of waiting calls until none is left, then frees its lane.
    private func drain() async {
        while true {
            let batch = state.withLock { s -> [Waiting] in
                let b = s.take(maxBatch)
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
