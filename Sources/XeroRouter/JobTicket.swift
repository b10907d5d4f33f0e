import Crypto
import Foundation
import XeroCore

/// What a router gives a worker with each job so that any router of the deployment can take over
/// the job's relay (docs/routing.md, "Handover"): the envelope without its payload, billing
/// included, and the worker it was given to, sealed with AES-GCM. The worker cannot read the
/// billing and cannot forge or alter a ticket; every router derives the same key from the
/// deployment's shared CURVE server secret.
public struct JobTicket: Sendable, Equatable {
    public var envelope: JobEnvelope
    public var worker: String

    public init(envelope: JobEnvelope, worker: String) {
        var e = envelope
        e.payload = []
        e.prefixBlocks = []   // placement is done; a ticket stays small (`WireLimits.maxTicketBytes`)
        self.envelope = e
        self.worker = worker
    }

    /// The sealing key of a deployment. With a plain fabric there is no secret (and no security
    /// at all): every router uses the same fixed key.
    public static func key(for security: RouterSecurity) -> SymmetricKey {
        var seed = Array("xerotier-ticket-v1".utf8)
        switch security {
        case .plaintext: seed += Array("plaintext".utf8)
        case let .curve(server, _): seed += Array(server.secretKey.utf8)
        }
        return SymmetricKey(data: SHA256.hash(data: seed))
    }

    public func seal(with key: SymmetricKey) -> [UInt8] {
        var w = WireWriter(capacity: 256)
        w.string(worker)
        w.blob(envelope.encode())
        // A fresh random nonce per ticket; sealing cannot fail with a valid key and nonce.
        guard let box = try? AES.GCM.seal(w.bytes, using: key), let combined = box.combined else { return [] }
        return Array(combined)
    }

    /// The ticket, if it was sealed with `key` and is well formed; nil for anything else.
    public static func open(_ sealed: [UInt8], with key: SymmetricKey) -> JobTicket? {
        guard !sealed.isEmpty, sealed.count <= WireLimits.maxTicketBytes,
              let box = try? AES.GCM.SealedBox(combined: sealed),
              let plain = try? AES.GCM.open(box, using: key) else { return nil }
        var r = WireReader(Array(plain))
        guard let worker = try? r.string(max: WireLimits.maxIDBytes, "worker"), let env = try? r.blob(), r.isAtEnd,
              let envelope = try? JobEnvelope.decode(env) else { return nil }
        return JobTicket(envelope: envelope, worker: worker)
    }
}
