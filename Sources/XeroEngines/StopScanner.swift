/// Applies OpenAI `stop` sequences to a stream of text pieces: a stop string is never emitted,
/// even when it arrives split across pieces. Text that could still be the start of a stop string
/// is held back until the next piece decides it. Matching is on UTF-8 bytes, not Swift
/// characters, so a stop inside a grapheme cluster (an emoji's skin-tone modifier) still matches.
public struct StopScanner: Sendable {
    public let stops: [[UInt8]]
    private var pending: [UInt8] = []
    public private(set) var stopped = false

    public init(stops: [String]) { self.stops = stops.filter { !$0.isEmpty }.map { Array($0.utf8) } }

    /// Feeds a piece; returns what may be emitted now. After a stop matched, `stopped` is true and
    /// everything from the stop string on is discarded.
    public mutating func feed(_ piece: String) -> String {
        guard !stopped else { return "" }
        if stops.isEmpty { return piece }
        pending.append(contentsOf: piece.utf8)
        if let cut = earliestMatch() {
            stopped = true
            defer { pending = [] }
            return String(decoding: pending[..<cut], as: UTF8.self)
        }
        // Hold back the longest suffix that is a proper prefix of some stop string. Such a suffix
        // starts with a stop string's first byte, so the cut falls on a character boundary.
        var hold = 0
        for s in stops {
            var len = min(s.count - 1, pending.count)
            while len > hold {
                if pending[(pending.count - len)...].elementsEqual(s[..<len]) { hold = len; break }
                len -= 1
            }
        }
        let emitEnd = pending.count - hold
        let out = String(decoding: pending[..<emitEnd], as: UTF8.self)
        pending.removeFirst(emitEnd)
        return out
    }

    /// The generation ended without a stop: release what was held back.
    public mutating func flush() -> String {
        defer { pending = [] }
        return stopped ? "" : String(decoding: pending, as: UTF8.self)
    }

    private func earliestMatch() -> Int? {
        var best: Int?
        for s in stops where s.count <= pending.count {
            var i = 0
            while i + s.count <= pending.count && (best == nil || i < best!) {
                if pending[i] == s[0] && pending[i..<(i + s.count)].elementsEqual(s) { best = i; break }
                i += 1
            }
        }
        return best
    }
}
