import Foundation
import XeroCore
import XeroStore

/// OpenAI's `x-ratelimit-*` headers for the key's own buckets.
public enum RateLimitHeaders {
    public static func fields(_ d: RateLimiter.Decision) -> [(String, String)] {
        var h: [(String, String)] = []
        if let l = d.limitRequests, let r = d.remainingRequests, let t = d.resetRequestsMs {
            h += [("x-ratelimit-limit-requests", String(l)), ("x-ratelimit-remaining-requests", String(r)),
                  ("x-ratelimit-reset-requests", formatDuration(ms: t))]
        }
        if let l = d.limitTokens, let r = d.remainingTokens, let t = d.resetTokensMs {
            h += [("x-ratelimit-limit-tokens", String(l)), ("x-ratelimit-remaining-tokens", String(r)),
                  ("x-ratelimit-reset-tokens", formatDuration(ms: t))]
        }
        return h
    }

    /// OpenAI's duration style: `20ms`, `1.5s`, `6m0s`.
    public static func formatDuration(ms: Int) -> String {
        if ms < 1000 { return "\(max(0, ms))ms" }
        let s = Double(ms) / 1000
        if s < 60 { return s == s.rounded() ? "\(Int(s))s" : Formatting.oneDecimal(s) + "s" }
        return "\(Int(s) / 60)m\(Int(s) % 60)s"
    }
}
