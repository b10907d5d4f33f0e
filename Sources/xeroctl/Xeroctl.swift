import ArgumentParser
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// `xeroctl`: the management API from a terminal. Base URL and key from flags or the environment
/// (`XEROCTL_BASE_URL`, `XEROCTL_KEY`). Tables by default, `--json` for scripts; on failure a
/// one-line reason on stderr and a non-zero exit.
@main
struct Xeroctl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "xeroctl", abstract: "Manage Xerotier projects, endpoints, keys, agents and join keys.",
        subcommands: [Projects.self, Endpoints.self, Keys.self, Agents.self, JoinKeys.self, UsageCommand.self, Tiers.self, TestCommand.self, BatchCommand.self, Ops.self, Models.self])

    static func main() async {
        do {
            var command = try parseAsRoot()
            if var c = command as? AsyncParsableCommand { try await c.run() } else { try command.run() }
        } catch let e as CLIError {
            FileHandle.standardError.write(Data("xeroctl: \(e.message)\n".utf8))
            Foundation.exit(1)
        } catch {
            exit(withError: error)
        }
    }
}

struct CLIError: Error { let message: String }

struct Connection: ParsableArguments {
    @Option(help: "Gateway base URL, e.g. http://127.0.0.1:8080 (env XEROCTL_BASE_URL).")
    var baseURL: String?
    @Option(help: "API key with the management scope, or the admin key (env XEROCTL_KEY).")
    var key: String?
    @Option(help: "Project id or slug (admin keys only; project keys act on their own project).")
    var project: String?
    @Flag(help: "Print JSON instead of a table.")
    var json = false

    /// The gateway base URL (no trailing slash) and key, from the flags or the environment.
    func credentials() throws -> (base: String, key: String) {
        let env = ProcessInfo.processInfo.environment
        guard let base = baseURL ?? env["XEROCTL_BASE_URL"] else { throw CLIError(message: "no base URL: pass --base-url or set XEROCTL_BASE_URL") }
        guard let key = key ?? env["XEROCTL_KEY"] else { throw CLIError(message: "no key: pass --key or set XEROCTL_KEY") }
        return (base.trimmingCharacters(in: CharacterSet(charactersIn: "/")), key)
    }

    func request(_ method: String, _ path: String, body: [String: Any]? = nil) async throws -> [String: Any] {
        try await send(method, path, body: try body.map { try JSONSerialization.data(withJSONObject: $0) }, contentType: "application/json")
    }

    /// POSTs raw bytes (an upload part).
    func upload(_ path: String, _ data: Data) async throws -> [String: Any] {
        try await send("POST", path, body: data, contentType: "application/octet-stream")
    }

    func send(_ method: String, _ path: String, body: Data?, contentType: String) async throws -> [String: Any] {
        let (base, key) = try credentials()
        var comps = URLComponents(string: base + path)
        if let project {
            let existing = comps?.queryItems ?? []
            comps?.queryItems = existing + [URLQueryItem(name: "project", value: project)]
        }
        guard let url = comps?.url else { throw CLIError(message: "bad base URL \(base)") }
        var req = URLRequest(url: url)
        req.httpMethod = method
        req.setValue("Bearer \(key)", forHTTPHeaderField: "Authorization")
        req.setValue("close", forHTTPHeaderField: "Connection")
        if let body {
            req.httpBody = body
            req.setValue(contentType, forHTTPHeaderField: "Content-Type")
        }
        let (data, response): (Data, URLResponse)
        do { (data, response) = try await URLSession.shared.data(for: req) } catch {
            throw CLIError(message: "cannot reach \(base): \(error.localizedDescription)")
        }
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        let obj = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:]
        guard (200..<300).contains(status) else {
            let msg = ((obj["error"] as? [String: Any])?["message"] as? String) ?? String(decoding: data, as: UTF8.self)
            throw CLIError(message: "\(status): \(msg)")
        }
        return obj
    }

    func printEntitlements(_ obj: [String: Any]) {
        if json { show(obj, columns: []); return }
        print(((obj["tiers"] as? [String]) ?? []).joined(separator: "\n"))
    }

    func show(_ obj: [String: Any], columns: [String]) {
        if json {
            let d = (try? JSONSerialization.data(withJSONObject: obj, options: [.prettyPrinted, .sortedKeys])) ?? Data()
            print(String(decoding: d, as: UTF8.self))
            return
        }
        let rows = (obj["data"] as? [[String: Any]]) ?? [obj]
        printTable(rows, columns: columns)
    }
}

/// One table cell. Foundation hands JSON numbers and booleans alike as NSNumber, and `as Bool`
/// accepts 0 and 1: only a real JSON boolean (objCType "c") prints as yes/no. Times (columns named
/// `last_heartbeat`, `created`, `*_at`, as epoch seconds or milliseconds) print as ages.
func cell(_ v: Any?, column: String = "") -> String {
    switch v {
    case nil, is NSNull: return "-"
    case let a as [Any]: return a.map { "\($0)" }.joined(separator: ",")
    case let n as NSNumber:
        if String(cString: n.objCType) == "c" { return n.boolValue ? "yes" : "no" }
        if isTimeColumn(column), let age = age(n.doubleValue) { return age }
        if isDurationColumn(column) { return duration(ms: n.doubleValue) }
        return n.stringValue
    case let s as String:
        if isTimeColumn(column), let d = Double(s), let age = age(d) { return age }
        return s
    default: return "\(v!)"
    }
}

func isTimeColumn(_ c: String) -> Bool { c == "last_heartbeat" || c == "created" || c.hasSuffix("_at") }

/// Columns that hold a span in milliseconds (`age_ms`, `*_ms_ago`), printed as 850ms / 4.2s / 3m.
func isDurationColumn(_ c: String) -> Bool { c.hasSuffix("_ms") || c.hasSuffix("_ms_ago") }

func duration(ms: Double) -> String {
    let a = abs(ms)
    return a < 1000 ? "\(Int(ms))ms" : a < 60_000 ? String(format: "%.1fs", ms / 1000) : a < 3_600_000 ? "\(Int(ms / 60_000))m" : "\(Int(ms / 3_600_000))h"
}

/// An epoch time (seconds or milliseconds) as "12s ago" / "in 3m"; nil for what is not one.
func age(_ t: Double, now: Double = Date().timeIntervalSince1970) -> String? {
    let seconds = t > 1e11 ? t / 1000 : t
    guard seconds > 1e9 else { return nil }   // not a date after 2001: a plain number
    let d = now - seconds
    let a = abs(d)
    let text = a < 60 ? "\(Int(a))s" : a < 3600 ? "\(Int(a / 60))m" : a < 86_400 ? "\(Int(a / 3600))h" : "\(Int(a / 86_400))d"
    return d >= 0 ? text + " ago" : "in " + text
}

func printTable(_ rows: [[String: Any]], columns: [String]) {
    let cells = rows.map { r in columns.map { cell(r[$0], column: $0) } }
    let widths = columns.indices.map { i in max(columns[i].count, cells.map { $0[i].count }.max() ?? 0) }
    func line(_ items: [String]) -> String {
        items.enumerated().map { $0.element.padding(toLength: widths[$0.offset], withPad: " ", startingAt: 0) }.joined(separator: "  ")
    }
    print(line(columns.map { $0.uppercased() }))
    for c in cells { print(line(c)) }
    if rows.isEmpty { print("(none)") }
}

struct Projects: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Projects (admin): list and create.", subcommands: [List.self, Create.self], defaultSubcommand: List.self)
    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List every project (admin).")
        @OptionGroup var c: Connection
        func run() async throws { c.show(try await c.request("GET", "/manage/v1/projects"), columns: ["id", "slug", "name", "url_id"]) }
    }
    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a project (admin).")
        @OptionGroup var c: Connection
        @Argument var slug: String
        @Option var name: String?
        func run() async throws {
            c.show(try await c.request("POST", "/manage/v1/projects", body: ["slug": slug, "name": name ?? slug]), columns: ["id", "slug", "name", "url_id"])
        }
    }
}

struct Endpoints: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "The project's endpoints: list, create, update, delete.", subcommands: [List.self, Create.self, Update.self, Delete.self], defaultSubcommand: List.self)
    static let columns = ["slug", "model", "tier", "fleet", "base_path"]
    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the project's endpoints with their base URLs.")
        @OptionGroup var c: Connection
        func run() async throws { c.show(try await c.request("GET", "/manage/v1/endpoints"), columns: Endpoints.columns) }
    }
    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create an endpoint for a model on a tier the project is entitled to.")
        @OptionGroup var c: Connection
        @Argument var slug: String
        @Option var model: String
        @Option var tier: String?
        @Option(help: "Who serves it: project, platform or both.") var fleet: String?
        func run() async throws {
            var body: [String: Any] = ["slug": slug, "model": model]
            if let tier { body["tier"] = tier }
            if let fleet { body["fleet"] = fleet }
            c.show(try await c.request("POST", "/manage/v1/endpoints", body: body), columns: Endpoints.columns)
        }
    }
    struct Update: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Change an endpoint's model, tier or fleet (a new tier must be one the project is entitled to).")
        @OptionGroup var c: Connection
        @Argument var slug: String
        @Option var model: String?
        @Option var tier: String?
        @Option(help: "Who serves it: project, platform or both.") var fleet: String?
        func run() async throws {
            var body: [String: Any] = [:]
            if let model { body["model"] = model }
            if let tier { body["tier"] = tier }
            if let fleet { body["fleet"] = fleet }
            c.show(try await c.request("PATCH", "/manage/v1/endpoints/\(slug)", body: body), columns: Endpoints.columns)
        }
    }
    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete an endpoint.")
        @OptionGroup var c: Connection
        @Argument var slug: String
        func run() async throws { _ = try await c.request("DELETE", "/manage/v1/endpoints/\(slug)"); if !c.json { print("deleted \(slug)") } else { print("{\"deleted\":true}") } }
    }
}

struct Keys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "The project's API keys: create, list, revoke, rotate.", subcommands: [Create.self, List.self, Revoke.self, Rotate.self], defaultSubcommand: List.self)
    static let columns = ["id", "name", "prefix", "scopes", "revoked", "expires_at", "allowed_ips"]
    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create an API key with scopes (the key is shown once).")
        @OptionGroup var c: Connection
        @Option var name: String = "key"
        @Option(help: "Comma-separated: inference, management.") var scopes: String = "inference"
        @Option(help: "Expire after this many seconds.") var expiresIn: Int?
        @Option(help: "Allow only this address or CIDR (repeatable).") var allowIp: [String] = []
        func run() async throws {
            var body: [String: Any] = ["name": name, "scopes": scopes.split(separator: ",").map(String.init)]
            if let expiresIn { body["expires_in_seconds"] = expiresIn }
            if !allowIp.isEmpty { body["allowed_ips"] = allowIp }
            let r = try await c.request("POST", "/manage/v1/keys", body: body)
            if c.json { c.show(r, columns: []) } else {
                c.show(r, columns: Keys.columns)
                print("\nkey: \(r["key"] as? String ?? "")\n(shown once: store it now)")
            }
        }
    }
    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the project's API keys (never the secrets).")
        @OptionGroup var c: Connection
        func run() async throws { c.show(try await c.request("GET", "/manage/v1/keys"), columns: Keys.columns) }
    }
    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke an API key at once, on every gateway.")
        @OptionGroup var c: Connection
        @Argument var id: String
        func run() async throws { c.show(try await c.request("POST", "/manage/v1/keys/\(id)/revoke"), columns: Keys.columns) }
    }
    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Replace a key with a new one; the old one works for a grace period.")
        @OptionGroup var c: Connection
        @Argument var id: String
        @Option(help: "Seconds the old key keeps working.") var grace: Int = 0
        func run() async throws {
            let r = try await c.request("POST", "/manage/v1/keys/\(id)/rotate", body: ["grace_seconds": grace])
            if c.json { c.show(r, columns: []) } else {
                c.show(r, columns: Keys.columns)
                print("\nnew key: \(r["key"] as? String ?? "")\n(shown once; the old key stops working in \(grace) s)")
            }
        }
    }
}

struct Agents: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "The workers (agents) serving the project, or every worker (admin).")
    @OptionGroup var c: Connection
    func run() async throws {
        c.show(try await c.request("GET", "/manage/v1/agents"), columns: ["id", "state", "engine", "models", "slots", "free", "inflight", "last_heartbeat"])
    }
}

struct JoinKeys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "join-keys", abstract: "Join keys that let the project's own agents connect: create, list, revoke.", subcommands: [Create.self, List.self, Revoke.self], defaultSubcommand: List.self)
    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a join key for an agent of this project (shown once).")
        @OptionGroup var c: Connection
        @Option var name: String = "workers"
        func run() async throws {
            let r = try await c.request("POST", "/manage/v1/join-keys", body: ["name": name])
            if c.json { c.show(r, columns: []) } else { c.show(r, columns: ["id", "name"]); print("\njoin key: \(r["join_key"] as? String ?? "")\n(shown once)") }
        }
    }
    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the project's join keys.")
        @OptionGroup var c: Connection
        func run() async throws { c.show(try await c.request("GET", "/manage/v1/join-keys"), columns: ["id", "name", "created_at", "revoked"]) }
    }
    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a join key: its agents are refused from then on.")
        @OptionGroup var c: Connection
        @Argument var id: String
        func run() async throws { _ = try await c.request("POST", "/manage/v1/join-keys/\(id)/revoke"); print(c.json ? "{\"revoked\":true}" : "revoked \(id)") }
    }
}

struct UsageCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "usage", abstract: "Requests, tokens and cost per endpoint.")
    @OptionGroup var c: Connection
    func run() async throws {
        let r = try await c.request("GET", "/manage/v1/usage")
        if c.json { c.show(r, columns: []); return }
        var rows: [[String: Any]] = []
        for (ep, v) in ((r["endpoints"] as? [String: Any]) ?? [:]).sorted(by: { $0.key < $1.key }) {
            var row = (v as? [String: Any]) ?? [:]
            row["endpoint"] = ep
            rows.append(row)
        }
        var total = (r["total"] as? [String: Any]) ?? [:]
        total["endpoint"] = "TOTAL"
        rows.append(total)
        for i in rows.indices { rows[i]["cost_usd"] = String(format: "%.6f", Double((rows[i]["cost_micro_usd"] as? Int) ?? 0) / 1e6) }
        printTable(rows, columns: ["endpoint", "requests", "input_tokens", "output_tokens", "cost_usd"])
    }
}

struct Tiers: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Service tiers, and (admin) which tiers a project is entitled to.",
                                                    subcommands: [List.self, Project.self, Grant.self, Withdraw.self], defaultSubcommand: List.self)
    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The deployment's tiers with their limits and prices.")
        @OptionGroup var c: Connection
        func run() async throws {
            c.show(try await c.request("GET", "/manage/v1/tiers"), columns: ["name", "priority", "weight", "requests_per_minute", "tokens_per_minute",
                                                                           "queue_timeout_ms", "request_timeout_ms", "price_input_per_million", "price_output_per_million"])
        }
    }
    struct Project: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The tiers a project may put endpoints on (admin).")
        @OptionGroup var c: Connection
        @Argument(help: "Project id or slug.") var projectRef: String
        func run() async throws { c.printEntitlements(try await c.request("GET", "/manage/v1/projects/\(projectRef)/tiers")) }
    }
    struct Grant: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Let a project use a tier (admin).")
        @OptionGroup var change: EntitlementChange
        func run() async throws { try await change.send("PUT") }
    }
    struct Withdraw: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Take a tier away from a project; its existing endpoints keep it until changed (admin).")
        @OptionGroup var change: EntitlementChange
        func run() async throws { try await change.send("DELETE") }
    }
}

/// A project and a tier, for granting or withdrawing it.
struct EntitlementChange: ParsableArguments {
    @OptionGroup var c: Connection
    @Argument(help: "Project id or slug.") var projectRef: String
    @Argument var tier: String
    func send(_ method: String) async throws {
        c.printEntitlements(try await c.request(method, "/manage/v1/projects/\(projectRef)/tiers/\(tier)"))
    }
}

/// Sends one chat request to an endpoint and reports latency, tokens and rate-limit headers.
struct TestCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "test", abstract: "Send a chat (or, with --prompt, a text completion) request to an endpoint; print latency, tokens, rate-limit headers.")
    @OptionGroup var c: Connection
    @Option(help: "Endpoint slug.") var endpoint: String
    @Option var message: String = "What is the capital of France?"
    @Option(help: "Send this text to /v1/completions instead of a chat message (for base models).") var prompt: String?
    @Option var maxTokens: Int = 32

    func run() async throws {
        let me = try await c.request("GET", "/manage/v1/whoami")
        guard let project = me["project"] as? String, !project.isEmpty else { throw CLIError(message: "test needs a project key with the inference scope") }
        let (base, key) = try c.credentials()
        var req = URLRequest(url: URL(string: "\(base)/proj_\(project)/\(endpoint)/v1/\(prompt == nil ? "chat/completions" : "completions")")!)
        req.httpMethod = "POST"
        req.setValue("Bearer \(key)", forHTTPHeaderField: "Authorization")
        req.setValue("application/json", forHTTPHeaderField: "Content-Type")
        let body: [String: Any] = prompt.map { ["model": "test", "max_tokens": maxTokens, "prompt": $0] }
            ?? ["model": "test", "max_tokens": maxTokens, "messages": [["role": "user", "content": message]]]
        req.httpBody = try JSONSerialization.data(withJSONObject: body)
        let t0 = Date()
        let (data, response) = try await URLSession.shared.data(for: req)
        let ms = Date().timeIntervalSince(t0) * 1000
        let http = response as! HTTPURLResponse
        let obj = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:]
        guard http.statusCode == 200 else {
            throw CLIError(message: "\(http.statusCode): \(((obj["error"] as? [String: Any])?["message"] as? String) ?? "")")
        }
        let usage = obj["usage"] as? [String: Any] ?? [:]
        let first = (obj["choices"] as? [[String: Any]])?.first
        let content = (first?["message"] as? [String: Any])?["content"] as? String ?? first?["text"] as? String ?? ""
        var out: [String: Any] = ["status": http.statusCode, "latency_ms": Int(ms), "model": obj["model"] ?? "",
                                  "prompt_tokens": usage["prompt_tokens"] ?? 0, "completion_tokens": usage["completion_tokens"] ?? 0,
                                  "content": content]
        for h in ["x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
                  "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens", "x-request-id"] {
            out[h] = http.value(forHTTPHeaderField: h) ?? "-"
        }
        if c.json { c.show(out, columns: []) } else {
            for k in out.keys.sorted() { print("\(k.padding(toLength: 32, withPad: " ", startingAt: 0)) \(cell(out[k], column: k))") }
        }
    }
}
