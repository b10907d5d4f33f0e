import XCTest
@testable import XeroStore

/// The one Redis URL grammar: `redis://[[user]:password@]host[:port][/db]`.
final class RedisAddressTests: XCTestCase {
    func testPlainForms() throws {
        XCTAssertEqual(try RedisAddress(url: "redis://h:7/3"), RedisAddress(host: "h", port: 7, db: 3))
        XCTAssertEqual(try RedisAddress(url: "redis://h"), RedisAddress(host: "h", port: 6379, db: 0))
        XCTAssertEqual(try RedisAddress(url: "redis://h/"), RedisAddress(host: "h"))
        XCTAssertEqual(try RedisAddress(url: "redis://127.0.0.1:6380/"), RedisAddress(host: "127.0.0.1", port: 6380))
        XCTAssertEqual(try RedisAddress(url: "REDIS://h:1/15"), RedisAddress(host: "h", port: 1, db: 15), "the scheme is case-insensitive")
        XCTAssertEqual(try RedisAddress(url: "redis://[::1]:6390/2"), RedisAddress(host: "::1", port: 6390, db: 2))
        XCTAssertEqual(try RedisAddress(url: "redis://[::1]"), RedisAddress(host: "::1"))
    }

    func testCredentials() throws {
        XCTAssertEqual(try RedisAddress(url: "redis://:pw@h:7/1"), RedisAddress(host: "h", port: 7, db: 1, username: nil, password: "pw"))
        XCTAssertEqual(try RedisAddress(url: "redis://alice:secret@h"), RedisAddress(host: "h", username: "alice", password: "secret"))
        XCTAssertEqual(try RedisAddress(url: "redis://alice:@h"), RedisAddress(host: "h", username: "alice", password: ""), "an empty password is still sent")
        // A ':' in the password needs no encoding: the user ends at the first one.
        XCTAssertEqual(try RedisAddress(url: "redis://u:a:b@h").password, "a:b")
        // Credentials end at the last '@', so a raw '@' or '/' in a password still parses.
        XCTAssertEqual(try RedisAddress(url: "redis://:p@ss/w@h:9/4"), RedisAddress(host: "h", port: 9, db: 4, password: "p@ss/w"))
    }

    func testPercentDecoding() throws {
        let a = try RedisAddress(url: "redis://al%3Ace:p%40ss%2Fw%3A%25%20%C3%A9@h:1")
        XCTAssertEqual(a.username, "al:ce")
        XCTAssertEqual(a.password, "p@ss/w:% é")
        XCTAssertEqual(try RedisAddress(url: "redis://:%7e%7E@h").password, "~~", "hex digits in either case")
        for bad in ["redis://:%@h", "redis://:%4@h", "redis://:%zz@h", "redis://%G1:x@h"] {
            XCTAssertThrowsError(try RedisAddress(url: bad), bad) { XCTAssertTrue("\($0)".contains("percent-encoding"), "\($0)") }
        }
        XCTAssertThrowsError(try RedisAddress(url: "redis://:%FF%FE@h")) { XCTAssertTrue("\($0)".contains("UTF-8"), "\($0)") }
    }

    func testDescriptionRedactsThePasswordAndParsesBack() throws {
        let a = try RedisAddress(url: "redis://al%3Ace:hunter2@h:7/3")
        XCTAssertEqual(a.description, "redis://al%3Ace:***@h:7/3")
        XCTAssertFalse("\(a)".contains("hunter2"))
        XCTAssertEqual(try RedisAddress(url: "redis://:hunter2@h").description, "redis://:***@h:6379/0")
        XCTAssertEqual(RedisAddress(host: "h").description, "redis://h:6379/0")
        XCTAssertEqual(RedisAddress(host: "::1").description, "redis://[::1]:6379/0")
        var parsed = try RedisAddress(url: a.description)
        parsed.password = "hunter2"
        XCTAssertEqual(parsed, a, "the redacted form is the same address but for the password")
        XCTAssertEqual(RedisAddress.redact("redis://u:hunter2@h:1"), "redis://u:***@h:1")
        XCTAssertEqual(RedisAddress.redact("redis://hunter2@h"), "redis://:***@h")
        XCTAssertEqual(RedisAddress.redact("redis://h:1/2"), "redis://h:1/2")
    }

    func testErrorsAreClearAndNeverShowThePassword() {
        let cases: [(String, String)] = [
            ("http://:hunter2@h", "unsupported scheme 'http'"),
            ("h:6379", "expected redis://"),
            ("redis+sentinel://:hunter2@s1:26379,s2:26379", "no master name"),
            ("redis+sentinel://:hunter2@s1:26379,s2:26379/", "no master name"),
            ("redis+sentinel://:hunter2@s1:26379,/m", "no host"),
            ("redis+sentinel://:hunter2@s1:x/m", "bad port 'x'"),
            ("redis+sentinel://:hunter2@s1/m/x", "the database 'x'"),
            ("redis+sentinel://:hunter2@s1/m/1/2", "after the master name"),
            ("redis+sentinel://:hunter2@s1/m*", "the master name 'm*'"),
            ("rediss://:hunter2@h", "no TLS"),
            ("redis://hunter2@h", "credentials need a password"),
            ("redis://:hunter2@h:port", "bad port 'port'"),
            ("redis://:hunter2@h:0", "bad port '0'"),
            ("redis://:hunter2@h:65536", "bad port '65536'"),
            ("redis://:hunter2@h:", "bad port ''"),
            ("redis://:hunter2@h:-1", "bad port '-1'"),
            ("redis://:hunter2@h/x", "the database 'x' is not a non-negative integer"),
            ("redis://:hunter2@h/-1", "not a non-negative integer"),
            ("redis://:hunter2@h/1/2", "not a non-negative integer"),
            ("redis://:hunter2@h/0?timeout=1", "query parameters"),
            ("redis://:hunter2@:6379", "no host"),
            ("redis://", "no host"),
            ("redis://:hunter2@[::1", "closing ']'"),
            ("redis://:hunter2@[::1]x", "after the IPv6 host"),
        ]
        for (url, expected) in cases {
            XCTAssertThrowsError(try RedisAddress(url: url), url) { error in
                let text = "\(error)"
                XCTAssertTrue(text.contains(expected), "\(url): \(text)")
                XCTAssertFalse(text.contains("hunter2"), "\(url) leaked its password: \(text)")
                XCTAssertTrue(text.hasPrefix("invalid Redis URL"), text)
            }
        }
    }

    func testSentinelURLs() throws {
        let a = try RedisAddress(url: "redis+sentinel://alice:hunter2@10.0.0.1:26379,[::1]:26380,s3/mymaster/2")
        XCTAssertEqual(a.sentinel?.master, "mymaster")
        XCTAssertEqual(a.sentinel?.endpoints, [RedisAddress.Endpoint(host: "10.0.0.1", port: 26379), RedisAddress.Endpoint(host: "::1", port: 26380),
                                               RedisAddress.Endpoint(host: "s3", port: 26379)], "Sentinel's port defaults to 26379")
        XCTAssertEqual(a.db, 2)
        XCTAssertEqual(a.username, "alice")
        XCTAssertEqual(a.password, "hunter2")
        XCTAssertEqual(a.description, "redis+sentinel://alice:***@10.0.0.1:26379,[::1]:26380,s3:26379/mymaster/2")
        var back = try RedisAddress(url: a.description)
        back.password = "hunter2"
        XCTAssertEqual(back, a, "the redacted form parses back to the same address but for the password")
        XCTAssertEqual(try RedisAddress(url: "redis+sentinel://s1:1/m").db, 0)
        XCTAssertNil(try RedisAddress(url: "redis://h").sentinel)
    }

    func testSchemeEnum() {
        XCTAssertEqual(RedisAddress.Scheme(rawValue: "redis+sentinel"), .sentinel)
        XCTAssertEqual(RedisAddress.Scheme(rawValue: "redis"), .redis)
    }
}
