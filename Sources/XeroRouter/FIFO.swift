/// A first-in first-out queue with O(1) push, pop and push-front (array with a moving head).
struct FIFO<Element> {
    private var items: [Element?] = []
    private var head = 0

    var count: Int { items.count - head }
    var isEmpty: Bool { count == 0 }

    mutating func append(_ e: Element) { items.append(e) }

    mutating func prepend(_ e: Element) {
        if head > 0 { head -= 1; items[head] = e } else { items.insert(e, at: 0) }
    }

    mutating func popFirst() -> Element? {
        guard head < items.count else { return nil }
        let e = items[head]
        items[head] = nil
        head += 1
        if head > 1024 && head * 2 > items.count { items.removeFirst(head); head = 0 }
        return e
    }

    func element(at offset: Int) -> Element { items[head + offset]! }

    /// Removes and returns the element `offset` places from the front.
    mutating func remove(at offset: Int) -> Element {
        if offset == 0 { return popFirst()! }
        return items.remove(at: head + offset)!
    }

    /// Removes every element matching `predicate`, keeping order; returns the removed ones.
    mutating func removeAll(where predicate: (Element) -> Bool) -> [Element] {
        var kept: [Element?] = []
        var removed: [Element] = []
        kept.reserveCapacity(count)
        for i in head..<items.count {
            let e = items[i]!
            if predicate(e) { removed.append(e) } else { kept.append(e) }
        }
        items = kept
        head = 0
        return removed
    }
}
