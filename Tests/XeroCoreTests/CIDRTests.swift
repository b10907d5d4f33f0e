import XCTest
@testable import XeroCore

final class CIDRTests: XCTestCase {
    func testIPv4() throws {
        let net = try XCTUnwrap(CIDR("10.1.0.0/16"))
        XCTAssertTrue(net.contains("10.1.255.3"))
        XCTAssertFalse(net.contains("10.2.0.1"))
        XCTAssertTrue(net.contains("::ffff:10.1.2.3"), "IPv4-mapped IPv6 counts as IPv4")
        XCTAssertFalse(net.contains("2001:db8::1"))
        XCTAssertTrue(try XCTUnwrap(CIDR("0.0.0.0/0")).contains("8.8.8.8"))
        XCTAssertTrue(try XCTUnwrap(CIDR("192.168.1.7")).contains("192.168.1.7"))
        XCTAssertFalse(try XCTUnwrap(CIDR("192.168.1.7")).contains("192.168.1.8"))
        XCTAssertTrue(try XCTUnwrap(CIDR("172.16.0.0/12")).contains("172.31.0.1"))
        XCTAssertFalse(try XCTUnwrap(CIDR("172.16.0.0/12")).contains("172.32.0.1"))
    }

    func testIPv6() throws {
        let net = try XCTUnwrap(CIDR("2001:db8::/32"))
        XCTAssertTrue(net.contains("2001:db8:ffff::1"))
        XCTAssertFalse(net.contains("2001:db9::1"))
        XCTAssertFalse(net.contains("10.0.0.1"))
        XCTAssertTrue(try XCTUnwrap(CIDR("::1/128")).contains("::1"))
        XCTAssertTrue(try XCTUnwrap(CIDR("fe80::/10")).contains("febf::1"))
        XCTAssertFalse(try XCTUnwrap(CIDR("fe80::/10")).contains("fec0::1"))
        XCTAssertEqual(CIDR("2001:db8::/32")?.description, "2001:db8::/32")
    }

    func testRejectsNonsense() {
        for bad in ["", "/", "1.2.3.4/", "10.0.0.0/33", "::/129", "10.0.0/8", "abc", "10.0.0.0/-1", "1.2.3.4/x"] { XCTAssertNil(CIDR(bad), bad) }
        XCTAssertFalse(CIDR("10.0.0.0/8")!.contains("not-an-ip"))
    }
}
