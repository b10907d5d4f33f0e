import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import Synchronization
import XeroCore
import XeroQueue
import XeroStore

/// `POST …/v1/chat/completions`: validate, enqueue on the endpoint's tier, then either collect the
/// events into one `chat.completion` or stream them as `chat.completion.chunk` SSE events.
struct ChatCompletions: Sendable {
    let jobs: InferenceJobs
    var tiers: [String: Tier] { jobs.tiers }

    /// Tokens reserved for the answer when the request sets no `max_tokens`.
    static let defaultReservedCompletionTokens = 256

    func handle(_ body: [UInt8], caller: CallerContext, headers: HTTPFields) async throws -> Response {
        let chat = try ChatRequest.parse(body)
        guard let tier = tiers[caller.endpoint.tier] else {
            throw APIError.internalError("Endpoint '\(caller.endpoint.slug)' names tier '\(caller.endpoint.tier)', which this gateway does not know.")
        }
        let requestId = jobs.ids.next()
        // Rate limits: reserve the prompt estimate plus the answer budget; settle with real usage.
        let reserve = Self.estimatePromptTokens(chat)
            .addingSaturated((chat.maxTokens ?? Self.defaultReservedCompletionTokens).multipliedSaturated(by: chat.n))
        let admission = try await jobs.admit(caller: caller, tier: tier, reserve: reserve, requestId: requestId)
        let limitHeaders = admission.headers, settle = admission.settle
        let now = nowMs()
        let job = jobs.envelope(kind: .chatCompletion, requestId: requestId, caller: caller, tier: tier, now: now, headers: headers, body: body)
        let hub = jobs.hub
        let (events, timer): (EventMailbox, Task<Void, Never>)
        do { (events, timer) = try await jobs.submit(job, tier: tier) } catch {
            settle(nil)
            throw error
        }
        var reader = EventReader(events)
        let writer = ChatResponseWriter(id: requestId, created: Int(now / 1000), model: caller.endpoint.model,
                                        includeUsage: chat.includeUsage)
        var responseHeaders: HTTPFields = limitHeaders
        responseHeaders[HTTPField.Name("x-request-id")!] = requestId

        // Wait for the first event before committing a status: a job refused in the queue (503)
        // or by the engine (400) gets its real status, streaming or not.
        let first: StreamEvent
        do {
            first = try await withTaskCancellationHandler { try await reader.next() } onCancel: { hub.cancel(requestId) }
        } catch {
            timer.cancel()
            hub.close(requestId)
            hub.cancel(requestId)
            settle(nil)
            throw error
        }
        if case var .error(e) = first.body {
            timer.cancel()
            hub.close(requestId)
            settle(nil)
            InferenceJobs.addHeaders(limitHeaders, to: &e)
            throw e
        }
        if !chat.stream {
            defer { timer.cancel(); hub.close(requestId) }
            var answer = ChatAccumulator(n: chat.n, logprobs: chat.logprobs)
            var event = first
            while true {
                switch event.body {
                case let .done(usage):
                    settle(usage)
                    responseHeaders[.contentType] = "application/json"
                    return Response(status: .ok, headers: responseHeaders,
                                    body: .init(byteBuffer: ByteBuffer(bytes: writer.completion(choices: answer.choices, usage: usage))))
                case let .error(e):
                    settle(nil)
                    if e.code == APIError.streamInterruptedCode { hub.cancel(requestId) }   // the worker may still be running
                    throw e
                default:
                    answer.add(event.body)
                }
                do { event = try await withTaskCancellationHandler { try await reader.next() } onCancel: { hub.cancel(requestId) } } catch {
                    hub.cancel(requestId)
                    settle(nil)
                    throw error
                }
            }
        }

        responseHeaders[.contentType] = "text/event-stream"
        responseHeaders[.cacheControl] = "no-cache"
        let n = chat.n
        let readerBox = ReaderBox(reader)
        return Response(status: .ok, headers: responseHeaders, body: ResponseBody { out in
            var reader = readerBox.reader
            var roleSent = [Bool](repeating: false, count: n)
            var event = first
            var clientGone = false
            var finalUsage: Usage?
            defer {
                timer.cancel()
                settle(finalUsage)
                hub.close(requestId)
                if clientGone { hub.cancel(requestId) }
            }
            var buffer = ByteBuffer()
            while true {
                var terminal = false
                switch event.body {
                case let .delta(index, text, logprobs) where (0..<n).contains(index):
                    if !roleSent[index] {
                        roleSent[index] = true
                        SSE.append(writer.chunk(index: index, role: true, content: ""), to: &buffer)
                    }
                    SSE.append(writer.chunk(index: index, content: text, logprobs: logprobs), to: &buffer)
                case let .toolCall(index, toolIndex, id, name, arguments) where (0..<n).contains(index) && WireLimits.toolIndices.contains(toolIndex):
                    if !roleSent[index] {
                        roleSent[index] = true
                        SSE.append(writer.chunk(index: index, role: true, content: nil), to: &buffer)
                    }
                    SSE.append(writer.toolCallChunk(index: index, toolIndex: toolIndex, id: id, name: name, arguments: arguments), to: &buffer)
                case let .finish(index, reason) where (0..<n).contains(index):
                    if !roleSent[index] {
                        roleSent[index] = true
                        SSE.append(writer.chunk(index: index, role: true, content: ""), to: &buffer)
                    }
                    SSE.append(writer.chunk(index: index, content: nil, finishReason: reason), to: &buffer)
                case let .done(usage):
                    finalUsage = usage
                    if writer.includeUsage { SSE.append(writer.usageChunk(usage), to: &buffer) }
                    buffer.writeBytes(SSE.done)
                    terminal = true
                case let .error(e):
                    // Mid-stream failure: an error event (the OpenAI SDK raises on it), no [DONE].
                    SSE.append(Array(e.jsonBody.utf8), to: &buffer)
                    terminal = true
                    if e.code == APIError.streamInterruptedCode { clientGone = true }   // stop the worker too
                default: break
                }
                // Batch: while more events have already arrived, keep appending; write once.
                if terminal || !reader.hasBuffered {
                    do { try await out.write(buffer) } catch {
                        clientGone = true
                        return
                    }
                    buffer.clear()
                }
                if terminal { break }
                do { event = try await reader.next() } catch let e as APIError {
                    try? await out.write(ByteBuffer(bytes: SSE.event(Array(e.jsonBody.utf8))))
                    clientGone = true // treat as gone: make sure the worker stops
                    break
                } catch {
                    clientGone = true
                    return
                }
            }
            try await out.finish(nil)
        })
    }
}

extension ChatCompletions {
    /// A cheap upper-bound guess of prompt tokens for reservation (≈ 4 bytes per token, plus
    /// per-message overhead); settlement corrects it with the engine's real count.
    static func estimatePromptTokens(_ chat: ChatRequest) -> Int {
        chat.messages.reduce(8) { $0.addingSaturated($1.content.utf8.count / 4 + 8) }
    }

    /// OpenAI's `x-ratelimit-*` headers, for the key's own buckets.
    static func rateLimitHeaders(_ d: RateLimiter.Decision) -> HTTPFields {
        var h: HTTPFields = [:]
        if let l = d.limitRequests, let r = d.remainingRequests, let t = d.resetRequestsMs {
            h[HTTPField.Name("x-ratelimit-limit-requests")!] = String(l)
            h[HTTPField.Name("x-ratelimit-remaining-requests")!] = String(r)
            h[HTTPField.Name("x-ratelimit-reset-requests")!] = formatDuration(ms: t)
        }
        if let l = d.limitTokens, let r = d.remainingTokens, let t = d.resetTokensMs {
            h[HTTPField.Name("x-ratelimit-limit-tokens")!] = String(l)
            h[HTTPField.Name("x-ratelimit-remaining-tokens")!] = String(r)
            h[HTTPField.Name("x-ratelimit-reset-tokens")!] = formatDuration(ms: t)
        }
        return h
    }

    /// OpenAI's duration style: `20ms`, `1.5s`, `6m0s`.
    static func formatDuration(ms: Int) -> String {
        if ms < 1000 { return "\(max(0, ms))ms" }
        let s = Double(ms) / 1000
        if s < 60 { return s == s.rounded() ? "\(Int(s))s" : String(format: "%.1fs", s) }
        return "\(Int(s) / 60)m\(Int(s) % 60)s"
    }
}

/// Reads a request's events in order, keeping to the first attempt that spoke, and checks that
/// none is missing: events of an attempt carry seq 0, 1, 2, …; a gap (a bound dropped some on
/// the way) ends the request with `stream_interrupted` instead of showing an answer with a hole.
/// Terminal events made by a router or this gateway carry `WireLimits.outOfBandSeq`.
struct EventReader {
    let mailbox: EventMailbox
    var attempt: Int?
    private var nextSeq = 0
    private var pending: [StreamEvent] = []
    private var index = 0

    init(_ mailbox: EventMailbox, attempt: Int? = nil) {
        self.mailbox = mailbox
        self.attempt = attempt
    }

    /// True when another event has already arrived (a writer can batch before flushing).
    var hasBuffered: Bool { index < pending.count }

    mutating func next() async throws -> StreamEvent {
        while true {
            if index >= pending.count {
                pending = await mailbox.take()
                index = 0
                if pending.isEmpty {
                    if Task.isCancelled { throw CancellationError() }
                    throw APIError.internalError("The event stream ended without a result.")
                }
            }
            let ev = pending[index]
            index += 1
            if ev.seq == WireLimits.outOfBandSeq {
                if ev.isTerminal { return ev }
                continue   // only terminal events travel out of band
            }
            // A re-dispatched job speaks with a new attempt number; never mix two attempts.
            if let attempt, ev.attempt != attempt { continue }
            if attempt == nil { attempt = ev.attempt }
            if ev.seq < nextSeq { continue }   // a duplicate
            if ev.seq > nextSeq {
                let e = APIError.streamInterrupted("events \(nextSeq)…\(ev.seq - 1) were lost")
                return StreamEvent(requestId: ev.requestId, attempt: ev.attempt, seq: WireLimits.outOfBandSeq, body: .error(e))
            }
            nextSeq += 1
            return ev
        }
    }
}

/// Hands the reader (with any events it already buffered) to the response body, which runs once.
final class ReaderBox: @unchecked Sendable {
    let reader: EventReader
    init(_ r: EventReader) { reader = r }
}

/// Unique request ids: a random per-process prefix and a counter (cheap: no syscall per id).
final class RequestIDs: Sendable {
    private let prefix: String
    private let counter = Atomic<UInt64>(0)
    init() { prefix = "chatcmpl-" + String(UInt64.random(in: 0..<UInt64.max), radix: 36) }
    func next() -> String {
        let n = counter.add(1, ordering: .relaxed).newValue
        return prefix + "x" + String(n, radix: 36)
    }
}
