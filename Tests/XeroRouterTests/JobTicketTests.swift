import XCTest
import XeroCore
import XeroQueue
@testable import XeroRouter

/// The ticket a router gives a worker with each job: any router of the deployment opens it,
/// nothing else does, and nobody can alter it (docs/routing.md, "Handover").
final class JobTicketTests: XCTestCase {
    let job = JobEnvelope(requestId: "chatcmpl-1", replyTo: "gw-1", attempt: 2, tier: "standard", project: "p", endpoint: "e", model: "m",
                          acceptedAtMs: 1, queueDeadlineMs: 2, requestDeadlineMs: 3, billing: Billing(keyHash: "k", reservedTokens: 7, batchId: ""),
                          payload: Array("{\"secret\":1}".utf8))

    func deployment(_ secret: String) -> RouterSecurity {
        .curve(server: CurveKeyPair(publicKey: "pub", secretKey: secret), platformPublicKey: "platform")
    }

    func testARouterOfTheDeploymentOpensItWithBillingAndWithoutThePayload() throws {
        let sealed = JobTicket(envelope: job, worker: "w1").seal(with: JobTicket.key(for: deployment("s1")))
        let opened = try XCTUnwrap(JobTicket.open(sealed, with: JobTicket.key(for: deployment("s1"))))
        XCTAssertEqual(opened.worker, "w1")
        XCTAssertEqual(opened.envelope.billing, job.billing)
        XCTAssertEqual(opened.envelope.attempt, 2)
        XCTAssertEqual(opened.envelope.payload, [], "the payload never travels in a ticket")
        XCTAssertFalse(sealed.contains(subsequence: Array("standard".utf8)), "the worker cannot read it")
    }

    func testAnotherDeploymentATamperedTicketOrGarbageOpensNothing() {
        let sealed = JobTicket(envelope: job, worker: "w1").seal(with: JobTicket.key(for: deployment("s1")))
        XCTAssertNil(JobTicket.open(sealed, with: JobTicket.key(for: deployment("s2"))))
        XCTAssertNil(JobTicket.open(sealed, with: JobTicket.key(for: .plaintext)))
        for i in stride(from: 0, to: sealed.count, by: 7) {
            var bad = sealed
            bad[i] ^= 0x01
            XCTAssertNil(JobTicket.open(bad, with: JobTicket.key(for: deployment("s1"))), "byte \(i) flipped")
        }
        XCTAssertNil(JobTicket.open([], with: JobTicket.key(for: deployment("s1"))))
        XCTAssertNil(JobTicket.open(Array(sealed.prefix(20)), with: JobTicket.key(for: deployment("s1"))))
        XCTAssertNil(JobTicket.open([UInt8](repeating: 7, count: WireLimits.maxTicketBytes + 1), with: JobTicket.key(for: deployment("s1"))))
    }
}

private extension Array where Element == UInt8 {
    func contains(subsequence s: [UInt8]) -> Bool {
        guard s.count <= count else { return false }
        return (0...(count - s.count)).contains { Array(self[$0..<($0 + s.count)]) == s }
    }
}
