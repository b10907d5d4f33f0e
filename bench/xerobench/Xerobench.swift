import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import XeroCore
import XeroEmbeddings
import XeroEngines
import XeroGGUF

/// Load generator and engine-direct baseline for docs/benchmarks.md. Usage:
///   xerobench http URL KEY CONCURRENCY SECONDS [stream] [max_tokens] [rate] [threads]
///   xerobench engine CONCURRENCY SECONDS [max_tokens]
///   xerobench gguf MODEL.gguf [prompt_tokens=512] [decode_tokens=128] [reps=3]   (llama-bench's pp/tg)
///   xerobench json-mask MODEL.gguf   (constrained-decoding mask per step: token scan vs trie walk)
///   xerobench placement [MODEL.gguf]   (placement decisions/s by worker count; prompt hashing vs tokenizing)
///   xerobench roofline MODEL.gguf   (read bandwidth, weight bytes per token, decode as a fraction of the roofline)
///   xerobench limiter REDIS_URL [seconds=5] [key_hash|admit|settle|wakeup]   (the limiter's pieces: CPU µs per request here and in Redis)
///   xerobench gguf-batch MODEL.gguf [1,2,4,8,16]   (decode tokens/s with B sequences per forward pass)
/// Prints one JSON object per run.
@main
struct Xerobench {
    static func main() async throws {
        let a = CommandLine.arguments
        guard a.count >= 2 else { fatalError("usage: xerobench http|engine ...") }
        switch a[1] {
        case "http":
            let stream = a.count > 6 && a[6] == "stream"
            try await HTTPLoad(url: URL(string: a[2])!, key: a[3], concurrency: Int(a[4])!, seconds: Double(a[5])!, stream: stream,
                               maxTokens: a.count > 7 ? Int(a[7])! : 1, rate: a.count > 8 ? Double(a[8])! : 0,
                               threads: a.count > 9 ? Int(a[9])! : 1).run()
        case "engine":
            try await engineDirect(concurrency: Int(a[2])!, seconds: Double(a[3])!, maxTokens: a.count > 4 ? Int(a[4])! : 1)
        case "embed-engine":
            try embedDirect(directory: a[2], batch: Int(a[3])!, seconds: Double(a[4])!)
        case "gguf-prefix":
            try ggufPrefix(path: a[2], prefixTokens: a.count > 3 ? Int(a[3])! : 1000)
        case "placement":
            try placementBench(tokenizerModel: a.count > 2 ? a[2] : nil)
        case "json-mask":
            try MaskBench.run(path: a[2])
        case "roofline":
            try RooflineBench.roofline(path: a[2])
        case "limiter":
            try await LimiterBench.run(url: a[2], seconds: a.count > 3 ? Double(a[3])! : 5, only: a.count > 4 ? a[4] : nil)
        case "gemm":
            GemmBench.run()
        case "sampler":
            try SamplerBench.run(path: a[2], draws: a.count > 3 ? Int(a[3])! : 2000)
        case "gguf-batch":
            try RooflineBench.batchedDecode(path: a[2], sizes: (a.count > 3 ? a[3] : "1,2,4,8,16").split(separator: ",").map { Int($0)! })
        case "gguf":
            try ggufDirect(path: a[2], promptTokens: a.count > 3 ? Int(a[3])! : 512, decodeTokens: a.count > 4 ? Int(a[4])! : 128,
                           reps: a.count > 5 ? Int(a[5])! : 3)
        default: fatalError("unknown mode \(a[1])")
        }
    }

    /// The GGUF model in-process, measured the way llama-bench does: prompt processing of N tokens
    /// in one batch (pp), then decoding M tokens one at a time (tg); best of `reps`.
    static func ggufDirect(path: String, promptTokens: Int, decodeTokens: Int, reps: Int) throws {
        let model = try LlamaModel(path: path)
        var rng = SystemRandomNumberGenerator()
        let prompt = (0..<promptTokens).map { _ in Int32.random(in: 100..<Int32(model.config.vocab), using: &rng) }
        var pp = 0.0, tg = 0.0
        for _ in 0..<reps {
            let cache = model.newCache(reserve: promptTokens + decodeTokens)
            let t0 = DispatchTime.now().uptimeNanoseconds
            _ = model.forward(prompt, cache: cache)
            pp = max(pp, Double(promptTokens) / (Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9))
            tg = max(tg, decodeRate(model, tokens: decodeTokens))
        }
        print(String(format: #"{"mode":"gguf","threads":%d,"pp":%d,"pp_tokens_per_s":%.1f,"tg":%d,"tg_tokens_per_s":%.1f}"#,
                     Parallel.threads, promptTokens, pp, decodeTokens, tg))
    }

    /// Tokens/s of decoding `tokens` greedy tokens one at a time from an empty cache (llama-bench's tg).
    static func decodeRate(_ model: LlamaModel, tokens: Int) -> Double {
        let cache = model.newCache(reserve: tokens + 1)
        var tok: Int32 = 1
        let t0 = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<tokens {
            let logits = model.forward([tok], cache: cache)
            tok = greedyToken(logits)
        }
        return Double(tokens) / (Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
    }

    /// The most likely token of a step's logits (the benches decode greedily).
    static func greedyToken(_ logits: [Float]) -> Int32 { Int32(logits.indices.max { logits[$0] < logits[$1] }!) }

    /// Time to first token for a prompt whose `prefixTokens`-token prefix is cached vs cold (median of 5).
    static func ggufPrefix(path: String, prefixTokens: Int) throws {
        let model = try LlamaModel(path: path)
        var rng = SystemRandomNumberGenerator()
        let prefix = (0..<prefixTokens).map { _ in Int32.random(in: 100..<Int32(model.config.vocab), using: &rng) }
        func ttft(_ pc: PrefixCache?, suffix: [Int32]) -> Double {
            let tokens = prefix + suffix
            let t0 = DispatchTime.now().uptimeNanoseconds
            let cache = pc?.lookup(tokens, reserve: tokens.count + 1, partition: "bench") ?? model.newCache(reserve: tokens.count + 1)
            let logits = model.forward(Array(tokens[cache.count...]), cache: cache)
            _ = greedyToken(logits)
            let ms = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6
            pc?.insert(tokens, count: tokens.count, from: cache, partition: "bench")
            return ms
        }
        let pc = PrefixCache(config: model.config, budgetBytes: 1 << 30)
        _ = ttft(pc, suffix: [42, 43, 44])   // warm the cache with the prefix
        var cold: [Double] = [], warm: [Double] = []
        for i in 0..<5 {
            let suffix = (0..<20).map { Int32(200 + i * 20 + $0) }
            cold.append(ttft(nil, suffix: suffix))
            warm.append(ttft(pc, suffix: suffix))
        }
        let c = cold.sorted()[2], w = warm.sorted()[2]
        print(String(format: #"{"mode":"gguf-prefix","prefix_tokens":%d,"suffix_tokens":20,"ttft_cold_ms":%.1f,"ttft_cached_ms":%.1f,"speedup":%.1f}"#,
                     prefixTokens, c, w, c / w))
    }

    /// The MiniLM encoder in-process: sentences embedded per second at a given batch size.
    static func embedDirect(directory: String, batch: Int, seconds: Double) throws {
        let enc = try MiniLMEncoder(directory: directory)
        let sentences = (0..<batch).map { "This is benchmark sentence number \($0), about as long as a typical search query." }
        let inputs = sentences.map { enc.tokenizer.encode($0, maxLength: 256).ids }
        let end = monotonicNs() + UInt64(seconds * 1e9)
        var calls = 0
        var lat: [UInt64] = []
        while monotonicNs() < end {
            let t0 = monotonicNs()
            _ = enc.embed(inputs)
            lat.append(monotonicNs() - t0)
            calls += 1
        }
        lat.sort()
        print(String(format: #"{"mode":"embed-engine","batch":%d,"tokens_per_input":%d,"calls":%d,"inputs_per_s":%.1f,"call_p50_ms":%.2f}"#,
                     batch, inputs[0].count, calls, Double(calls * batch) / seconds, Double(lat[lat.count / 2]) / 1e6))
    }

    /// The same SimEngine the workers run, called in-process: what a request costs with no platform.
    static func engineDirect(concurrency: Int, seconds: Double, maxTokens: Int) async throws {
        let engine = SimEngine(options: .init(slots: concurrency))
        let chat = try ChatRequest.parse(Array(#"{"model":"m","messages":[{"role":"user","content":"bench"}],"max_tokens":\#(maxTokens)}"#.utf8))
        let stats = Stats()
        let end = monotonicNs() + UInt64(seconds * 1e9)
        try await withThrowingTaskGroup(of: Void.self) { g in
            for _ in 0..<concurrency {
                g.addTask {
                    while monotonicNs() < end {
                        let t0 = monotonicNs()
                        var first: UInt64 = 0
                        var tokens = 0
                        for try await ev in engine.generate(EngineRequest(requestId: "r", model: "m", chat: chat)) {
                            if case .text = ev { tokens += 1; if first == 0 { first = monotonicNs() } }
                        }
                        stats.record(ttft: first - t0, total: monotonicNs() - t0, tokens: tokens, ok: true)
                    }
                }
            }
            try await g.waitForAll()
        }
        print(stats.report(mode: "engine", concurrency: concurrency, seconds: seconds))
    }
}

final class Stats: @unchecked Sendable {
    private let lock = NIOLock()
    private var ttft: [UInt64] = []
    private var total: [UInt64] = []
    private var tokens = 0
    private var errors = 0
    private var statusCounts: [Int: Int] = [:]

    func record(ttft t: UInt64, total tt: UInt64, tokens n: Int, ok: Bool, status: Int = 200) {
        lock.withLock {
            if ok { ttft.append(t); total.append(tt); tokens += n } else { errors += 1 }
            statusCounts[status, default: 0] += 1
        }
    }

    func report(mode: String, concurrency: Int, seconds: Double, extra: String = "") -> String {
        lock.withLock {
            let t = ttft.sorted(), tt = total.sorted()
            func pct(_ a: [UInt64], _ p: Double) -> Double { a.isEmpty ? 0 : Double(a[min(a.count - 1, Int(Double(a.count) * p))]) / 1e6 }
            let n = t.count
            return String(format: #"{"mode":"%@","concurrency":%d,"seconds":%.1f,"requests":%d,"errors":%d,"rps":%.1f,"ttft_p50_ms":%.3f,"ttft_p99_ms":%.3f,"total_p50_ms":%.3f,"total_p99_ms":%.3f,"tokens":%d,"tokens_per_s":%.0f%@}"#,
                          mode, concurrency, seconds, n, errors, Double(n) / seconds, pct(t, 0.5), pct(t, 0.99), pct(tt, 0.5), pct(tt, 0.99),
                          tokens, Double(tokens) / seconds, extra)
        }
    }
}

/// Keep-alive HTTP/1.1 connections, each running requests back to back (closed loop), or at a
/// fixed aggregate rate (open loop: latency counted from the scheduled start, so queueing shows).
struct HTTPLoad {
    let url: URL
    let key: String
    let concurrency: Int
    let seconds: Double
    let stream: Bool
    let maxTokens: Int
    let rate: Double
    let threads: Int

    func run() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let stats = Stats()
        let body = ProcessInfo.processInfo.environment["XEROBENCH_BODY"]
            ?? #"{"model":"bench","messages":[{"role":"user","content":"bench"}],"max_tokens":\#(maxTokens),"stream":\#(stream)}"#
        let endNs = monotonicNs() + UInt64(seconds * 1e9)
        let pacer = rate > 0 ? Pacer(interval: UInt64(1e9 / rate), start: monotonicNs()) : nil
        let open = OpenChannels()
        // A server may close the connection after a response (llama-server does for streams):
        // the slot then reconnects and goes on, so every slot keeps one request in flight.
        @Sendable func connect() async throws {
            let handler = BenchConnection(host: url.host!, path: url.path, key: key, body: body, endNs: endNs, stats: stats, pacer: pacer)
            handler.onClose = { if monotonicNs() < endNs { Task { try? await connect() } } }
            let ch = try await ClientBootstrap(group: group)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { ch in
                    ch.pipeline.addHTTPClientHandlers().flatMap { ch.pipeline.addHandler(handler) }
                }
                .connect(host: url.host!, port: url.port!).get()
            open.add(ch)
        }
        for _ in 0..<concurrency { try await connect() }
        try await Task.sleep(nanoseconds: UInt64(seconds * 1e9) + 200_000_000)
        for ch in open.all() { try? await ch.close() }
        try await group.shutdownGracefully()
        print(stats.report(mode: stream ? "http-stream" : "http", concurrency: concurrency, seconds: seconds,
                           extra: rate > 0 ? String(format: #","target_rps":%.0f"#, rate) : ""))
    }
}

/// The load's connections, for closing them at the end.
final class OpenChannels: @unchecked Sendable {
    private let lock = NIOLock()
    private var channels: [Channel] = []
    func add(_ ch: Channel) { lock.withLock { channels.append(ch) } }
    func all() -> [Channel] { lock.withLock { channels } }
}

/// Hands out evenly spaced start times for open-loop load.
final class Pacer: @unchecked Sendable {
    private let lock = NIOLock()
    private var next: UInt64
    let interval: UInt64
    init(interval: UInt64, start: UInt64) { self.interval = interval; next = start }
    func take() -> UInt64 { lock.withLock { let t = next; next += interval; return t } }
}

final class BenchConnection: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    let host: String, path: String, key: String, body: String, endNs: UInt64
    let stats: Stats
    let pacer: Pacer?
    var start: UInt64 = 0
    var first: UInt64 = 0
    var tokens = 0
    var status = 0
    var inFlight = false
    var onClose: (@Sendable () -> Void)?
    static let marker = Array(#""delta":{"content":"#.utf8)

    init(host: String, path: String, key: String, body: String, endNs: UInt64, stats: Stats, pacer: Pacer?) {
        self.host = host; self.path = path; self.key = key; self.body = body; self.endNs = endNs; self.stats = stats; self.pacer = pacer
    }

    func channelActive(context: ChannelHandlerContext) { next(context: context) }

    func next(context: ChannelHandlerContext) {
        if let pacer {
            let at = pacer.take()
            guard at < endNs else { return }
            let now = monotonicNs()
            if at > now {
                context.eventLoop.scheduleTask(in: .nanoseconds(Int64(at - now))) { self.send(context: context, scheduled: at) }
                return
            }
            send(context: context, scheduled: at)
        } else {
            guard monotonicNs() < endNs else { return }
            send(context: context, scheduled: monotonicNs())
        }
    }

    func send(context: ChannelHandlerContext, scheduled: UInt64) {
        start = scheduled
        inFlight = true
        status = 0
        first = 0
        tokens = 0
        var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: path)
        head.headers.add(name: "Host", value: host)
        head.headers.add(name: "Authorization", value: "Bearer \(key)")
        head.headers.add(name: "Content-Type", value: "application/json")
        head.headers.add(name: "Content-Length", value: String(body.utf8.count))
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case let .head(h): status = Int(h.status.code)
        case let .body(buf):
            if first == 0 { first = monotonicNs() }
            tokens += count(buf)
        case .end:
            inFlight = false
            let now = monotonicNs()
            stats.record(ttft: (first == 0 ? now : first) - start, total: now - start, tokens: max(tokens, status == 200 ? 1 : 0),
                         ok: status == 200, status: status)
            next(context: context)
        }
    }

    func count(_ buf: ByteBuffer) -> Int {
        let m = Self.marker
        var n = 0
        buf.withUnsafeReadableBytes { p in
            var i = 0
            while i + m.count <= p.count {
                if p[i] == m[0] && p[i + 1] == m[1] {
                    var ok = true
                    for j in 2..<m.count where p[i + j] != m[j] { ok = false; break }
                    if ok { n += 1; i += m.count; continue }
                }
                i += 1
            }
        }
        return n
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) { context.close(promise: nil) }

    func channelInactive(context: ChannelHandlerContext) {
        // A request cut off mid-response counts as an error; one the server closed on before
        // answering (it ended the keep-alive) is simply sent again on the new connection.
        if inFlight && status != 0 && monotonicNs() < endNs {
            stats.record(ttft: 0, total: monotonicNs() - start, tokens: 0, ok: false, status: 0)
        }
        inFlight = false
        onClose?()
    }
}
