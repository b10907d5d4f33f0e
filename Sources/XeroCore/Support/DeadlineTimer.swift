import Foundation

/// Runs actions after a delay, on one thread per process, and forgets a cancelled one at once.
///
/// Why not a `Task.sleep` per request: Swift 6.3 keeps a cancelled `Task.sleep`'s memory (about
/// 1.5 KB) until its original deadline passes. A gateway's safety net and a worker's job deadline
/// sleep for the tier's request timeout (minutes), and are nearly always cancelled when the request
/// ends: at thousands of requests a second that held gigabytes (docs/benchmarks.md, "Memory per
/// request"). Here a cancelled entry costs nothing but its slot in the heap, and the heap is
/// compacted when cancelled slots outnumber live ones.
public final class DeadlineTimer: @unchecked Sendable {
    public static let shared = DeadlineTimer()

    public struct Token: Hashable, Sendable { let id: UInt64 }

    private struct Entry { var at: UInt64; var id: UInt64 }   // at: monotonic ns

    private let condition = NSCondition()
    private var heap: [Entry] = []
    private var actions: [UInt64: @Sendable () -> Void] = [:]
    private var nextID: UInt64 = 0

    public init() {
        let t = Thread { [self] in self.run() }
        t.name = "deadline-timer"
        t.start()
    }

    /// Runs `action` on the timer's thread after `ms` (clamped to a week). Keep it short: every
    /// deadline of the process waits behind it.
    @discardableResult
    public func schedule(afterMs ms: Int64, _ action: @escaping @Sendable () -> Void) -> Token {
        let delay = UInt64(min(max(ms, 0), 7 * 86_400_000)) * 1_000_000
        condition.lock()
        defer { condition.unlock() }
        nextID &+= 1
        let id = nextID
        actions[id] = action
        push(Entry(at: DispatchTime.now().uptimeNanoseconds + delay, id: id))
        condition.signal()
        return Token(id: id)
    }

    /// The action will not run (if it has not started yet).
    public func cancel(_ token: Token) {
        condition.lock()
        defer { condition.unlock() }
        actions[token.id] = nil
        // Cancelled entries stay in the heap until they surface; rebuild when they are most of it.
        if heap.count > 1024, heap.count > 2 * actions.count {
            heap = heap.filter { actions[$0.id] != nil }
            for i in stride(from: heap.count / 2 - 1, through: 0, by: -1) { siftDown(i) }
        }
    }

    /// Entries waiting (live and cancelled), for tests.
    public var heapCount: Int { condition.lock(); defer { condition.unlock() }; return heap.count }

    private func run() {
        condition.lock()
        while true {
            guard let top = heap.first else {
                condition.wait()
                continue
            }
            let now = DispatchTime.now().uptimeNanoseconds
            if top.at > now {
                _ = condition.wait(until: Date(timeIntervalSinceNow: Double(top.at - now) / 1e9))
                continue
            }
            pop()
            guard let action = actions.removeValue(forKey: top.id) else { continue }
            condition.unlock()
            action()
            condition.lock()
        }
    }

    // A binary min-heap on `at`.

    private func push(_ e: Entry) {
        heap.append(e)
        var i = heap.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard heap[i].at < heap[parent].at else { break }
            heap.swapAt(i, parent)
            i = parent
        }
    }

    private func pop() {
        let last = heap.removeLast()
        guard !heap.isEmpty else { return }
        heap[0] = last
        siftDown(0)
    }

    private func siftDown(_ start: Int) {
        var i = start
        while true {
            let l = 2 * i + 1, r = l + 1
            var smallest = i
            if l < heap.count, heap[l].at < heap[smallest].at { smallest = l }
            if r < heap.count, heap[r].at < heap[smallest].at { smallest = r }
            guard smallest != i else { return }
            heap.swapAt(i, smallest)
            i = smallest
        }
    }
}
