import Dispatch
import XeroCore
import XeroMetrics

/// One request's way through the job client, measured as its events pass (docs/operations.md,
/// "Metrics"): time to first token and inter-token gaps as the gateway receives them, and at its
/// end its latency, tokens and how it ended — counted once however it ends. Its token clock is the
/// reader's alone; `failed` reads only what never changes, so `end()` may call it from anywhere.
final class RequestTimeline: @unchecked Sendable {
    let instruments: RequestInstruments
    /// When the job client was first asked (before admission): the client's own starting point.
    let arrivedNs: UInt64
    /// Chat streams tokens; embeddings and rerank answer in one piece (no TTFT or ITL).
    let streamsTokens: Bool
    private var lastTokenNs: UInt64 = 0
    private var firstTokenNs: UInt64 = 0
    private var finishReason = "stop"

    init(_ instruments: RequestInstruments, arrivedNs: UInt64, streamsTokens: Bool) {
        self.instruments = instruments
        self.arrivedNs = arrivedNs
        self.streamsTokens = streamsTokens
    }

    /// Notes a non-terminal event (read by the handle's one reader).
    func saw(_ body: StreamEvent.Body) {
        switch body {
        case .delta, .toolCall:
            guard streamsTokens else { return }
            let now = DispatchTime.now().uptimeNanoseconds
            if lastTokenNs == 0 {
                firstTokenNs = now
                instruments.timeToFirstToken.record(Self.seconds(from: arrivedNs, to: now))
            } else {
                instruments.interTokenLatency.record(Self.seconds(from: lastTokenNs, to: now))
            }
            lastTokenNs = now
        case let .finish(_, reason): finishReason = reason
        default: break
        }
    }

    /// Counts a request that ended with its answer; returns its finish reason.
    func succeeded(_ usage: Usage) -> String {
        recordLatency()
        instruments.succeeded(reason: finishReason, promptTokens: usage.promptTokens, generationTokens: usage.completionTokens)
        return finishReason
    }

    /// Counts a request that ended in an error; returns its code.
    func failed(status: Int, code: String) -> String {
        recordLatency()
        instruments.failed(status: status, code: code)
        return code
    }

    /// What the request achieved as the gateway saw it, ms: time to first token from arrival, and
    /// time per output token after the first (nil before a token, or with fewer than two).
    func achieved(completionTokens: Int) -> (ttftMs: Double?, tpotMs: Double?) {
        guard firstTokenNs > 0 else { return (nil, nil) }
        let ttft = Self.seconds(from: arrivedNs, to: firstTokenNs) * 1000
        guard completionTokens > 1, lastTokenNs > firstTokenNs else { return (ttft, nil) }
        return (ttft, Self.seconds(from: firstTokenNs, to: lastTokenNs) * 1000 / Double(completionTokens - 1))
    }

    var elapsedMs: Int { Int(Self.seconds(from: arrivedNs, to: DispatchTime.now().uptimeNanoseconds) * 1000) }

    private func recordLatency() {
        instruments.e2eLatency.record(Self.seconds(from: arrivedNs, to: DispatchTime.now().uptimeNanoseconds))
    }

    static func seconds(from start: UInt64, to end: UInt64) -> Double {
        end > start ? Double(end - start) / 1e9 : 0
    }
}
