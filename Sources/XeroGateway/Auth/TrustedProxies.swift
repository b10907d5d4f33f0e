import HTTPTypes
import XeroCore

/// Which peers may speak for the client (`--trusted-proxy CIDR…`): only from them are
/// `X-Forwarded-For` and `X-Forwarded-Proto` believed. IP allow-lists and secure cookies depend on
/// this: behind a load balancer the socket's peer is the balancer, and anyone else could claim any
/// address in the header.
public struct TrustedProxies: Sendable {
    public let networks: [CIDR]
    public init(_ networks: [CIDR] = []) { self.networks = networks }

    func trusts(_ ip: String) -> Bool { networks.contains { $0.contains(ip) } }

    /// The client's address: the peer's, or — when the peer is a trusted proxy — the right-most
    /// address in `X-Forwarded-For` that is not itself a trusted proxy (each proxy appends the
    /// address it saw, so entries left of the first untrusted one could be forged by the client).
    public func clientIP(peer: String?, headers: HTTPFields) -> String? {
        guard let peer, trusts(peer), !networks.isEmpty else { return peer }
        let hops = headers[values: HTTPField.Name("X-Forwarded-For")!]
            .flatMap { $0.split(separator: ",") }
            .map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty }
        var client = peer
        for hop in hops.reversed() {
            guard CIDR(hop) != nil else { return client }   // garbage: stop at the last address we could trust
            client = hop
            if !trusts(hop) { return hop }
        }
        return client
    }

    /// Whether the client's connection was HTTPS: this gateway's own TLS, or a trusted proxy
    /// saying so in `X-Forwarded-Proto`.
    public func isSecure(peer: String?, headers: HTTPFields, tls: Bool) -> Bool {
        if tls { return true }
        guard let peer, trusts(peer) else { return false }
        return headers[HTTPField.Name("X-Forwarded-Proto")!]?.split(separator: ",").first?
            .trimmingCharacters(in: .whitespaces).lowercased() == "https"
    }
}
