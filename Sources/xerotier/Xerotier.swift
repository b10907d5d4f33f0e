import ArgumentParser
import XeroQueue
import XeroWorker
import Foundation
import Logging
import XeroCore

@main
struct Xerotier: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "xerotier",
        abstract: "Xerotier: a multi-tenant LLM inference platform with an OpenAI-compatible API.",
        subcommands: [Up.self, GatewayCommand.self, RouterCommand.self, WorkerCommand.self, BatchRunnerCommand.self, Admin.self, Supervise.self])
}

/// Options every process shares.
struct CommonOptions: ParsableArguments {
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    @Option(help: "Log format: text, or json (one object per line, with request_id, project, endpoint, tier and worker where known).")
    var logFormat: String = "text"

    @Option(help: ArgumentHelp("Exit when this process id is no longer our parent (set by `up`).", visibility: .hidden))
    var parentPid: Int32?

    func makeLogger(_ label: String) -> Logger {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        let json = logFormat == "json"
        var logger = Logger(label: label) { json ? JSONLogHandler(label: $0) as any LogHandler : StreamLogHandler.standardError(label: $0) }
        logger.logLevel = level
        return logger
    }

    func validate() throws {
        guard ["text", "json"].contains(logFormat) else { throw ValidationError("--log-format must be text or json (got \(logFormat)).") }
    }

    /// A process started by `up` leaves when `up` does, even if `up` was killed with SIGKILL.
    func watchParent() {
        guard let parentPid else { return }
        Thread.detachNewThread {
            while getppid() == parentPid { usleep(300_000) }
            kill(getpid(), SIGTERM)
            sleep(10)
            Foundation.exit(1)
        }
    }
}

/// The platform config, for the processes that read it (gateway, router, batch runner, up).
/// Workers take none: a tenant's agent on another machine has no platform config, and what a
/// job needs (its deadlines) travels in its envelope.
struct ConfigOptions: ParsableArguments {
    @Option(help: "Platform config (tiers, defaults, demo). It must exist and be valid: a process never falls back to built-in defaults.")
    var config: String = "config/xerotier.yaml"

    /// Loads the config or stops the process with a message naming the path and what is wrong.
    func load() throws -> PlatformConfig {
        try Self.load(path: config)
    }

    static func load(path: String) throws -> PlatformConfig {
        guard FileManager.default.fileExists(atPath: path) else {
            throw ValidationError("config file \(path) does not exist (pass --config PATH; the repository's is config/xerotier.yaml)")
        }
        do { return try PlatformConfig.load(path: path) } catch {
            throw ValidationError("config file \(path) is invalid: \(error)")
        }
    }
}

/// Router addressing shared by gateway, router and worker commands.
struct RouterAddressOptions: ParsableArguments {
    @Option(help: "Host the router listens on / is reached at.")
    var routerHost: String = "127.0.0.1"

    @Option(help: "First of the router's four consecutive TCP ports (jobs, workers, events-in, events-out).")
    var routerPort: Int = 5555

    @Option(name: .customLong("router"), help: "A router of the deployment as HOST:PORT (its first port); repeat for every router. Gateways, batch runners and workers connect to all of them (default: --router-host and --router-port).")
    var routers: [String] = []

    /// The client side of every router: its jobs and events-out addresses.
    func clientLinks() throws -> [StreamHub.RouterLink] {
        try connectTargets().map { StreamHub.RouterLink(jobs: "tcp://\($0.host):\($0.port)", eventsOut: "tcp://\($0.host):\($0.port + 3)") }
    }

    /// The worker side of every router: its workers and events-in addresses.
    func workerLinks() throws -> [Worker.RouterLink] {
        try connectTargets().map { Worker.RouterLink(workers: "tcp://\($0.host):\($0.port + 1)", eventsIn: "tcp://\($0.host):\($0.port + 2)") }
    }

    /// Every router to connect to: host and first port.
    func connectTargets() throws -> [(host: String, port: Int)] {
        guard !routers.isEmpty else { return [(routerHost, routerPort)] }
        return try routers.map { spec in
            guard let colon = spec.lastIndex(of: ":"), let port = Int(spec[spec.index(after: colon)...]), (1...65532).contains(port),
                  colon > spec.startIndex else {
                throw ValidationError("--router \(spec): expected HOST:PORT, the router's first port")
            }
            return (String(spec[..<colon]), port)
        }
    }
}

struct RedisOptions: ParsableArguments {
    @Option(help: "Redis URL (default: $REDIS_URL, else redis://127.0.0.1:6379).")
    var redis: String?

    var url: String { redis ?? ProcessInfo.processInfo.environment["REDIS_URL"] ?? "redis://127.0.0.1:6379" }
}

/// Blocks until SIGINT or SIGTERM arrives.
func waitForTerminationSignal() async -> Int32 {
    await TerminationSignals.install().wait()
}

/// SIGINT/SIGTERM caught from the moment `install()` returns (not from whenever an async task
/// first runs): a signal sent right after a process says it is ready is never lost.
final class TerminationSignals: @unchecked Sendable {
    private let lock = NSLock()
    private var received: Int32?
    private var waiter: CheckedContinuation<Int32, Never>?

    static func install() -> TerminationSignals {
        let t = TerminationSignals()
        var sources: [DispatchSourceSignal] = []
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            s.setEventHandler { t.deliver(sig) }
            s.resume()
            sources.append(s)
        }
        SignalSources.keep(sources)
        return t
    }

    private func deliver(_ sig: Int32) {
        lock.lock()
        guard received == nil else { lock.unlock(); return }
        received = sig
        let w = waiter
        waiter = nil
        lock.unlock()
        w?.resume(returning: sig)
    }

    func wait() async -> Int32 {
        await withCheckedContinuation { cont in
            lock.lock()
            if let r = received { lock.unlock(); cont.resume(returning: r); return }
            waiter = cont
            lock.unlock()
        }
    }
}

/// Keeps signal sources alive for the life of the process.
enum SignalSources {
    nonisolated(unsafe) private static var kept: [DispatchSourceSignal] = []
    static func keep(_ s: [DispatchSourceSignal]) { kept += s }
}
