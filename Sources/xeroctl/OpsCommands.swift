import ArgumentParser
import Foundation

/// `xeroctl ops …` (admin): what the platform is doing now, from the routers' ops records in
/// Redis, through the gateway's `/manage/v1/ops/*` routes.
struct Ops: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "What runs and waits (admin): tier queues, workers, jobs, one job.",
                                                    subcommands: [Queues.self, Workers.self, Jobs.self, Job.self], defaultSubcommand: Queues.self)

    struct Queues: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Each tier's queue depth, running jobs and totals; the live routers.")
        @OptionGroup var c: Connection
        @OptionGroup var watch: Watch
        func run() async throws {
            try await watch.repeatDrawing {
                let r = try await c.request("GET", "/manage/v1/ops/queues")
                c.show(r, columns: ["tier", "depth", "inflight", "waiting_indexed", "running_indexed", "submitted_total", "completed_total",
                                    "expired_total", "routers", "updated_ms_ago"])
                if !c.json {
                    print("")
                    printTable((r["routers"] as? [[String: Any]]) ?? [], columns: ["id", "last_seen_ms_ago"])
                }
            }
        }
    }

    struct Workers: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Every live worker: state, breaker, slots, jobs, fleet.")
        @OptionGroup var c: Connection
        @OptionGroup var watch: Watch
        func run() async throws {
            try await watch.repeatDrawing {
                c.show(try await c.request("GET", "/manage/v1/ops/workers"),
                       columns: ["id", "state", "breaker", "engine", "models", "slots", "free", "inflight", "fleet", "host", "last_heartbeat"])
            }
        }
    }

    struct Jobs: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The jobs waiting (or running) in a tier, oldest first, from the tier's index (no SCAN).")
        @OptionGroup var c: Connection
        @OptionGroup var watch: Watch
        @Option(help: "Only this tier (default: every tier).") var tier: String?
        @Option(help: "waiting or running.") var state: String = "waiting"
        @Option(help: "At most this many (1-1000).") var limit: Int = 100
        func run() async throws {
            var query = "?state=\(state)&limit=\(limit)"
            if let tier { query += "&tier=\(tier.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? tier)" }
            try await watch.repeatDrawing {
                c.show(try await c.request("GET", "/manage/v1/ops/jobs" + query),
                       columns: ["id", "tier", "state", "project", "endpoint", "model", "worker", "attempt", "age_ms"])
            }
        }
    }

    struct Job: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "One job's record: state, worker, attempts, timings, tokens.")
        @OptionGroup var c: Connection
        @OptionGroup var watch: Watch
        @Argument var id: String
        func run() async throws {
            let path = "/manage/v1/ops/jobs/" + (id.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(["/"])) ?? id)
            try await watch.repeatDrawing {
                let r = try await c.request("GET", path)
                if c.json { c.show(r, columns: []); return }
                let rows = r.keys.sorted().map { ["field": $0, "value": cell(r[$0], column: $0)] as [String: Any] }
                printTable(rows, columns: ["field", "value"])
            }
        }
    }
}

/// `--watch`: redraw a view every `--interval` seconds until interrupted.
struct Watch: ParsableArguments {
    @Flag(help: "Redraw every --interval seconds until Ctrl-C.") var watch = false
    @Option(help: "Seconds between redraws with --watch.") var interval: Double = 2
    @Option(help: ArgumentHelp("Stop after this many redraws (tests).", visibility: .hidden)) var watchCount: Int?

    func repeatDrawing(_ draw: () async throws -> Void) async throws {
        guard watch else { try await draw(); return }
        var drawn = 0
        while watchCount.map({ drawn < $0 }) ?? true {
            // Clear the screen and home the cursor only on a terminal; a pipe gets plain frames.
            if isatty(1) == 1 { print("\u{1B}[H\u{1B}[2J", terminator: "") }
            print("every \(interval)s · \(ISO8601DateFormatter().string(from: Date()))\n")
            try await draw()
            fflush(nil)   // every output stream: a pipe sees each frame as it is drawn
            drawn += 1
            try await Task.sleep(nanoseconds: UInt64(max(0.1, interval) * 1e9))
        }
    }
}
