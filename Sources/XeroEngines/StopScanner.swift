/// Applies OpenAI `stop` sequences to a stream of text pieces: a stop string is never emitted,
/// even when it arrives split across pieces. Text that could still be the start of a stop string
/// is held back until the next piece decides it.
public struct StopScanner: Sendable {
    public let stops: [String]
    private var pending = ""
    public private(set) var stopped = false

    public init(stops: [String]) { self.stops = stops.filter { !$0.isEmpty } }

    /// Feeds a piece; returns what may be emitted now. After a stop matched, `stopped` is true and
    /// everything from the stop string on is discarded.
    public mutating func feed(_ piece: String) -> String {
        guard !stopped else { return "" }
        if stops.isEmpty { return piece }
        pending += piece
        // Earliest complete match of any stop string.
        var cut: String.Index?
        for s in stops {
            if let r = pending.range(of: s), cut == nil || r.lowerBound < cut! { cut = r.lowerBound }
        }
        if let cut {
            stopped = true
            let out = String(pending[..<cut])
            pending = ""
            return out
        }
        // Hold back the longest suffix that is a proper prefix of some stop string.
        var hold = 0
        for s in stops {
            let maxLen = min(s.count - 1, pending.count)
            if maxLen <= hold { continue }
            for len in stride(from: maxLen, to: hold, by: -1) where pending.hasSuffix(String(s.prefix(len))) {
                hold = len
                break
            }
        }
        let emitEnd = pending.index(pending.endIndex, offsetBy: -hold)
        let out = String(pending[..<emitEnd])
        pending = String(pending[emitEnd...])
        return out
    }

    /// The generation ended without a stop: release what was held back.
    public mutating func flush() -> String {
        defer { pending = "" }
        return stopped ? "" : pending
    }
}
