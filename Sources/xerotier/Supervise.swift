import ArgumentParser
import Foundation

/// Runs a program that cannot watch its parent itself (redis-server) so that it still leaves when
/// `up` does — even if `up` is killed with SIGKILL. SIGTERM/SIGINT are passed on to the program.
struct Supervise: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "supervise", abstract: "Run a program tied to a parent process.",
                                                    shouldDisplay: false)

    @Option var parentPid: Int32
    @Argument(parsing: .captureForPassthrough) var command: [String]

    func run() throws {
        let argv = command.first == "--" ? Array(command.dropFirst()) : command
        guard let exe = argv.first else { throw ValidationError("no program given") }
        let child = try ChildProcess(name: "supervised", executable: exe, arguments: Array(argv.dropFirst()), logPath: "/dev/stderr", inheritOutput: true)
        for sig in [SIGTERM, SIGINT] { signal(sig, SIG_IGN) }
        let forward = { (sig: Int32) in child.signal(sig) }
        var sources: [DispatchSourceSignal] = []
        for sig in [SIGTERM, SIGINT] {
            let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            s.setEventHandler { forward(SIGTERM) }
            s.resume()
            sources.append(s)
        }
        var orphanedAt: Date?
        while child.isRunning {
            usleep(100_000)
            if getppid() != parentPid {
                if orphanedAt == nil { orphanedAt = Date(); child.signal(SIGTERM) }
                else if Date().timeIntervalSince(orphanedAt!) > 10 { child.signal(SIGKILL) }
            }
        }
        _ = sources
    }
}
