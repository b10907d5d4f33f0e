import Foundation
import Logging
import XeroCore
import XeroJobs
import XeroQueue
import XeroStore

/// Runs batches: validates their input, feeds lines to the router's `batch` tier (weight 0: only
/// capacity no interactive job can use) with a bounded number in flight, records each line's
/// outcome exactly once, and writes the output and error files. All its state is in Redis, so a
/// crashed or restarted runner resumes where it was: lines that were in flight are dispatched
/// again, and the record script keeps the first result of a line that ran twice.
public final class BatchRunner: Sendable {
    public struct Options: Sendable {
        public var maxInFlight = 32
        public var tierName = "batch"
        public var pollMs: UInt64 = 50
        /// Transient failures (no worker, worker lost, timeout) are retried this often per line.
        public var maxTries = 3
        public init() {}
    }

    let store: BatchStore
    let files: FileRecords
    let fileStore: FileStore
    /// Lines run like any job: admitted against the project's limits (waiting, never failing, when
    /// one holds them back), billed by the router at the batch tier's prices.
    let jobs: JobClient
    var hub: StreamHub { jobs.hub }
    let config: PlatformConfig
    let options: Options
    let logger: Logger
    private let inflight = Locked(0)
    private let parsed = Locked<[String: [BatchLine]]>([:])
    private let stopped = Locked(false)
    private let epoch = String(UInt64.random(in: 0..<UInt64.max), radix: 36)

    public init(store: BatchStore, files: FileRecords, fileStore: FileStore, jobs: JobClient, config: PlatformConfig,
                options: Options = Options(), logger: Logger) {
        self.store = store
        self.files = files
        self.fileStore = fileStore
        self.jobs = jobs
        self.config = config
        self.options = options
        self.logger = logger
    }

    public func stop() { stopped.withLock { $0 = true } }

    /// Only one runner drives batches at a time: it holds `xero:batch-runner:lease` (renewed every
    /// loop, 5 s expiry). A standby runner takes over within seconds of the holder dying, and
    /// recovers its in-flight lines first.
    static let leaseKey = "xero:batch-runner:lease"
    static let leaseMs = 5000

    func holdLease() async -> Bool {
        let me = hub.gatewayID
        let renewed = try? await store.redis.send(["EVAL", """
            if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
            if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 2 end
            return 0
            """, "1", Self.leaseKey, me, String(Self.leaseMs)])
        return (renewed?.int ?? 0) > 0
    }

    public func run() async {
        _ = await hub.waitUntilReady(timeoutMs: 30_000)
        var leading = false
        while !stopped.withLock({ $0 }) {
            let holds = await holdLease()
            if holds && !leading {
                logger.info("batch runner leads", metadata: ["runner": "\(hub.gatewayID)"])
                await recover()
            }
            leading = holds
            guard leading else {
                try? await Task.sleep(nanoseconds: 500_000_000)
                continue
            }
            do {
                // One broken batch must not hold up the others.
                for id in try await store.activeIDs() {
                    do { try await step(id) } catch {
                        logger.error("batch step failed", metadata: ["batch": "\(id)", "error": "\(error)"])
                    }
                }
            } catch {
                logger.error("batch runner cannot list batches", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(nanoseconds: options.pollMs * 1_000_000)
        }
        // Hand the lease over at once on a clean stop.
        _ = try? await store.redis.send(["EVAL", "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
                                         "1", Self.leaseKey, hub.gatewayID])
    }

    /// After a restart: what the previous runner had in flight will never report to us (its
    /// channel is gone), so those lines go back to be dispatched again.
    func recover() async {
        guard let ids = try? await store.activeIDs() else { return }
        for id in ids {
            guard let lines = try? await store.redis.send(["HKEYS", BatchStore.inflight(id)]).array.compactMap(\.string), !lines.isEmpty else { continue }
            _ = try? await store.redis.pipeline(strings: [["MULTI"], ["RPUSH", BatchStore.retry(id)] + lines, ["DEL", BatchStore.inflight(id)], ["EXEC"]])
            logger.info("batch resumed after restart", metadata: ["batch": "\(id)", "requeued": "\(lines.count)"])
        }
    }

    func step(_ id: String) async throws {
        guard let b = try await store.get(id) else {
            _ = try await store.redis.send(["SREM", BatchStore.active, id])
            return
        }
        let now = Int64(Date().timeIntervalSince1970)
        switch b.status {
        case "validating":
            try await validate(b, now: now)
        case "in_progress":
            if now >= b.expiresAt {
                try await finishWhenDrained(b, as: "expired", now: now)
                return
            }
            let lines: [BatchLine]
            do { lines = try await self.lines(of: b) } catch {
                // The input vanished or changed under a running batch: fail it rather than retry forever.
                try await fail(b, [BatchInput.LineError(code: "file_not_found", message: "The input file could not be read: \(error)", param: "input_file_id", line: nil)], now: now)
                return
            }
            try await dispatch(b, lines: lines)
            let pending = try await store.redis.pipeline(strings: [["HLEN", BatchStore.inflight(id)], ["LLEN", BatchStore.retry(id)]])
            let fresh = try await store.get(id) ?? b
            if fresh.nextLine >= lines.count, pending[0].int == 0, pending[1].int == 0 {
                try await finalize(fresh, status: "completed", now: now)
            }
        case "cancelling":
            try await finishWhenDrained(b, as: "cancelled", now: now)
        default:
            _ = try await store.redis.send(["SREM", BatchStore.active, id])
            parsed.withLock { _ = $0.removeValue(forKey: id) }
        }
    }

    func validate(_ b: BatchRecord, now: Int64) async throws {
        let data: Data
        do { data = try fileStore.read(id: b.inputFileID) } catch {
            try await fail(b, [BatchInput.LineError(code: "file_not_found", message: "The input file could not be read.", param: "input_file_id", line: nil)], now: now)
            return
        }
        switch BatchInput.parse(data, endpoint: b.fields["endpoint"] ?? "") {
        case let .failure(errors):
            try await fail(b, errors, now: now)
        case let .success(lines):
            parsed.withLock { $0[b.id] = lines }
            try await store.set(b.id, ["status": "in_progress", "in_progress_at": String(now), "total": String(lines.count), "next_line": "0"])
            logger.info("batch validated", metadata: ["batch": "\(b.id)", "lines": "\(lines.count)"])
        }
    }

    func fail(_ b: BatchRecord, _ errors: [BatchInput.LineError], now: Int64) async throws {
        try await store.set(b.id, ["status": "failed", "failed_at": String(now), "errors": BatchInput.errorsJSON(errors)])
        _ = try await store.redis.send(["SREM", BatchStore.active, b.id])
        logger.info("batch failed validation", metadata: ["batch": "\(b.id)", "errors": "\(errors.count)"])
    }

    func lines(of b: BatchRecord) async throws -> [BatchLine] {
        if let l = parsed.withLock({ $0[b.id] }) { return l }
        let data = try fileStore.read(id: b.inputFileID)
        guard case let .success(l) = BatchInput.parse(data, endpoint: b.fields["endpoint"] ?? "") else {
            throw RedisError("batch \(b.id): input no longer valid")
        }
        parsed.withLock { $0[b.id] = l }
        return l
    }

    /// KEYS: batch, inflight, retry, tries. ARGV: total lines, request id prefix, runner epoch.
    /// Returns {line, tries}, or {-1, 0} when nothing is left to dispatch.
    static let claimScript = """
    local line = redis.call('LPOP', KEYS[3])
    if not line then
      local n = tonumber(redis.call('HGET', KEYS[1], 'next_line') or '0')
      if n >= tonumber(ARGV[1]) then return {-1, 0} end
      redis.call('HSET', KEYS[1], 'next_line', n + 1)
      line = n
    end
    line = tonumber(line)
    local tries = redis.call('HINCRBY', KEYS[4], line, 1)
    redis.call('HSET', KEYS[2], line, ARGV[2] .. line .. '_' .. ARGV[3] .. '_' .. tries)
    return {line, tries}
    """

    func dispatch(_ b: BatchRecord, lines: [BatchLine]) async throws {
        let tier = config.tier(named: options.tierName) ?? config.tiers.last!
        while inflight.withLock({ $0 }) < options.maxInFlight {
            // Claim a line atomically (retries first, then the cursor) and mark it in flight in the
            // same step: a crash can never leave a line claimed but unrecorded.
            let claim = try await store.redis.send(["EVAL", Self.claimScript, "4", BatchStore.key(b.id), BatchStore.inflight(b.id),
                                                    BatchStore.retry(b.id), BatchStore.tries(b.id), String(lines.count),
                                                    "batchreq_\(b.id)_", epoch]).array.compactMap(\.int)
            guard claim.count == 2, claim[0] >= 0, claim[0] < lines.count else { return }
            let line = claim[0], tries = claim[1]
            let requestId = "batchreq_\(b.id)_\(line)_\(epoch)_\(tries)"
            let embeddings = b.fields["endpoint"] == "/v1/embeddings"
            let text = b.fields["endpoint"] == "/v1/completions"
            var body = lines[line].body
            let account = JobAccount(keyHash: "", project: b.project, endpoint: b.endpointSlug,
                                     fleet: b.fields["fleet"].flatMap(EndpointFleet.init(name:)) ?? .both, model: b.model, tier: tier, batchId: b.id)
            let embeddingsRequest = embeddings ? try? EmbeddingsRequest.parse(body) : nil
            var chatRequest = embeddings ? nil : try? (text ? CompletionRequest.parse(body) : ChatRequest.parse(body))
            if chatRequest != nil { RequestDefaults.apply(to: &chatRequest!, body: &body, tier: tier) }
            let reserve = embeddingsRequest.map(Reservation.tokens(for:)) ?? chatRequest.map(Reservation.tokens(for:)) ?? 0
            let n = embeddings ? (embeddingsRequest?.inputs.count ?? 1)
                : (chatRequest.map { $0.completion?.choiceCount(n: $0.n) ?? $0.n } ?? 1)
            let base64 = embeddingsRequest?.base64 ?? false
            let customID = lines[line].customID
            // Seconds → ms without overflow, and never past what the wire carries.
            let expiresAtMs = min(b.expiresAt.multipliedSaturated(by: 1000), WireLimits.timesMs.upperBound)
            inflight.withLock { $0 += 1 }
            Task {
                defer { self.inflight.withLock { $0 -= 1 } }
                let now = nowMs()
                let job: JobHandle
                do {
                    job = try await self.jobs.start(account, kind: embeddings ? .embeddings : text ? .textCompletion : .chatCompletion, payload: body, reserve: reserve,
                                                    requestId: requestId,
                                                    prefixBlocks: chatRequest.map { PromptBlocks.hashes($0, partition: account.project) } ?? [],
                                                    deadlines: JobClient.Deadlines(queueMs: max(now + Int64(tier.queueTimeoutMs), expiresAtMs)),
                                                    waitForLimits: true, waitUntilMs: expiresAtMs)
                } catch {
                    await self.retryLater(batch: b.id, line: line, why: "\(error)")
                    return
                }
                await self.collect(batch: b.id, model: b.model, line: line, customID: customID, n: n, base64: base64, text: text,
                                   logprobs: chatRequest?.completion?.logprobs != nil, tries: tries, job: job)
            }
        }
    }

    /// A line that could not be submitted (router unreachable, batch expiring while a limit held
    /// it): back on the retry list; an expiring batch drops that list and reports it as not run.
    func retryLater(batch: String, line: Int, why: String) async {
        logger.info("batch line not submitted; retried later", metadata: ["batch": "\(batch)", "line": "\(line)", "reason": "\(why)"])
        _ = try? await store.redis.pipeline(strings: [["MULTI"], ["HDEL", BatchStore.inflight(batch), String(line)],
                                                      ["RPUSH", BatchStore.retry(batch), String(line)], ["EXEC"]])
    }

    /// Waits for one line's result and records it (or queues a retry for a transient failure).
    func collect(batch: String, model: String, line: Int, customID: String, n: Int, base64: Bool, text: Bool = false, logprobs: Bool = false,
                 tries: Int, job: JobHandle) async {
        defer { job.end() }
        let requestId = job.requestId
        var answer = ChatAccumulator(n: n, logprobs: false)
        var textAnswer = CompletionAccumulator(choices: n)
        var vectors: (dim: Int, data: [UInt8])?
        var outcome: (ok: Bool, status: Int, body: [UInt8])?
        while outcome == nil {
            let ev: StreamEvent
            do { ev = try await job.next() } catch { return }   // the runner is stopping; recovery re-dispatches
            switch ev.body {
            case let .vectors(dim, data):
                vectors = (dim, data)
            case let .done(usage):
                if let vectors {
                    outcome = (true, 200, EmbeddingsResponse.json(dim: vectors.dim, data: vectors.data, count: n, base64: base64, model: model,
                                                                  promptTokens: usage.promptTokens))
                } else if text {
                    let w = CompletionResponseWriter(id: "cmpl-\(requestId)", created: Int(Date().timeIntervalSince1970), model: model)
                    outcome = (true, 200, w.completion(choices: textAnswer.choices, logprobs: logprobs, usage: usage))
                } else {
                    let w = ChatResponseWriter(id: "chatcmpl-\(requestId)", created: Int(Date().timeIntervalSince1970), model: model)
                    outcome = (true, 200, w.completion(choices: answer.choices, usage: usage))
                }
            case let .error(e):
                outcome = (false, e.status, Array(e.jsonBody.utf8))
            default:
                if text { textAnswer.add(ev.body) } else { answer.add(ev.body) }
            }
        }
        guard let outcome else { return }
        let transient = !outcome.ok && [502, 503, 504].contains(outcome.status)
        do {
            if transient && tries < options.maxTries {
                _ = try await store.redis.pipeline(strings: [["MULTI"], ["HDEL", BatchStore.inflight(batch), String(line)],
                                                             ["RPUSH", BatchStore.retry(batch), String(line)], ["EXEC"]])
                return
            }
            var w = JSONWriter()
            w.objectStart()
            w.field("id", "batch_req_\(requestId)")
            w.field("custom_id", customID)
            w.key("response"); w.objectStart()
            w.field("status_code", outcome.status); w.field("request_id", requestId); w.key("body"); w.raw(outcome.body)
            w.objectEnd()
            w.key("error"); w.null()
            w.objectEnd()
            _ = try await store.record(batch: batch, line: line, ok: outcome.ok, outputLine: w.string)
        } catch {
            logger.error("cannot record batch line; it will run again after a restart", metadata: ["batch": "\(batch)", "line": "\(line)", "error": "\(error)"])
        }
    }

    func finishWhenDrained(_ b: BatchRecord, as status: String, now: Int64) async throws {
        if status == "expired", b.status == "in_progress" {
            // Stop dispatch: mark the rest as never run by moving the cursor to the end.
            _ = try await store.redis.pipeline(strings: [["HSET", BatchStore.key(b.id), "expiring", "1"], ["DEL", BatchStore.retry(b.id)]])
        }
        _ = try await store.redis.send(["DEL", BatchStore.retry(b.id)])
        guard try await store.redis.send(["HLEN", BatchStore.inflight(b.id)]).int == 0 else { return }
        try await finalize(try await store.get(b.id) ?? b, status: status, now: now)
    }

    /// Writes the output file (successes, in input order) and the error file (failures, and lines
    /// never run when cancelled or expired), then the final status.
    func finalize(_ b: BatchRecord, status: String, now: Int64) async throws {
        try await store.set(b.id, ["finalizing_at": String(now)])
        let lines = (try? await lines(of: b)) ?? []
        let results = try await store.redis.send(["HGETALL", BatchStore.results(b.id)]).hash
        let errors = try await store.redis.send(["HGETALL", BatchStore.errors(b.id)]).hash
        var out: [UInt8] = [], err: [UInt8] = []
        for (i, line) in lines.enumerated() {
            if let r = results[String(i)] { out += Array(r.utf8); out.append(10) }
            else if let e = errors[String(i)] { err += Array(e.utf8); err.append(10) }
            else if status != "completed" {
                var w = JSONWriter()
                w.objectStart(); w.field("id", "batch_req_\(b.id)_\(i)"); w.field("custom_id", line.customID); w.key("response"); w.null()
                w.key("error"); w.objectStart()
                w.field("code", status == "expired" ? "batch_expired" : "batch_cancelled")
                w.field("message", status == "expired" ? "This request could not be executed before the completion window expired."
                                                       : "This request was not executed because the batch was cancelled.")
                w.objectEnd(); w.objectEnd()
                err += w.bytes; err.append(10)
            }
        }
        var fields: [String: String] = ["status": status, "\(status)_at": String(now)]
        if !out.isEmpty { fields["output_file_id"] = try await storeFile(out, project: b.project, name: "\(b.id)_output.jsonl") }
        if !err.isEmpty { fields["error_file_id"] = try await storeFile(err, project: b.project, name: "\(b.id)_error.jsonl") }
        try await store.set(b.id, fields)
        _ = try await store.redis.send(["SREM", BatchStore.active, b.id])
        parsed.withLock { _ = $0.removeValue(forKey: b.id) }
        logger.info("batch finished", metadata: ["batch": "\(b.id)", "status": "\(status)", "completed": "\(results.count)", "failed": "\(errors.count)"])
    }

    func storeFile(_ bytes: [UInt8], project: String, name: String) async throws -> String {
        let id = "file-" + randomID(length: 24)
        try fileStore.write(bytes, id: id)
        try await files.put(FileRecord(id: id, project: project, filename: name, bytes: bytes.count, purpose: "batch_output",
                                       createdAt: Int64(Date().timeIntervalSince1970)))
        return id
    }
}
