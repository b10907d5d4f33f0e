import Foundation
import XeroStore

/// A private redis-server for one test class: started on a random free-ish port, stopped after.
/// `extraArguments` go on its command line (`--requirepass pw`, `--user alice on >pw …`).
final class RedisServerFixture: @unchecked Sendable {
    private(set) var process = Process()
    private(set) var port: Int

    /// A server on a random port of `portRange`; a port some other process holds (its server
    /// exits at once) is given up for another, up to ten times.
    convenience init(portRange: ClosedRange<Int>, extraArguments: [String] = []) {
        self.init(port: Int.random(in: portRange), extraArguments: extraArguments)
        for _ in 0..<10 where !process.isRunning {
            start(port: Int.random(in: portRange), extraArguments: extraArguments)
        }
    }

    /// A server on `port` (e.g. one restarted where a stopped one was).
    init(port: Int, extraArguments: [String] = []) {
        self.port = port
        start(port: port, extraArguments: extraArguments)
    }

    private func start(port: Int, extraArguments: [String]) {
        self.port = port
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/redis-server")
        process.arguments = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"] + extraArguments
        process.standardOutput = FileHandle.nullDevice
        try? process.run()
        // Connecting needs no credentials (only commands do), so this works for any server.
        for _ in 0..<100 where process.isRunning && (try? RedisConnection(RedisAddress(port: port))) == nil { usleep(20_000) }
    }

    var address: RedisAddress { RedisAddress(port: port) }

    /// Stops the server from inside an async test: SHUTDOWN over the protocol, then wait until the
    /// port refuses connections (Foundation's `waitUntilExit` can hang off the main thread).
    func shutdown() {
        _ = try? RedisConnection(address).command(["SHUTDOWN", "NOSAVE"])
        for _ in 0..<250 where (try? RedisConnection(address)) != nil { usleep(20_000) }
    }

    func stop() {
        process.terminate()
        process.waitUntilExit()
    }
}
