import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import XeroCore
import XeroJobs

/// `POST …/v1/chat/completions`: validate, enqueue on the endpoint's tier, then either collect the
/// events into one `chat.completion` or stream them as `chat.completion.chunk` SSE events.
struct ChatCompletions: Sendable {
    let jobs: InferenceJobs

    func handle(_ body: [UInt8], caller: CallerContext, headers: HTTPFields) async throws -> Response {
        var chat = try ChatRequest.parse(body)
        let account = try jobs.account(for: caller)
        var body = body
        RequestDefaults.apply(to: &chat, body: &body, tier: account.tier)
        // Rate limits: reserve the prompt estimate plus the answer budget; the router settles
        // with the worker's real usage.
        let reserve = Reservation.tokens(for: chat)
        let job = try await jobs.client.start(account, kind: .chatCompletion, payload: body, reserve: reserve,
                                              prefixBlocks: PromptBlocks.hashes(chat, partition: account.project), slo: InferenceJobs.slo(headers))
        let writer = ChatResponseWriter(id: job.requestId, created: Int(nowMs() / 1000), model: caller.endpoint.model,
                                        includeUsage: chat.includeUsage)
        var responseHeaders = InferenceJobs.responseHeaders(job)

        // Wait for the first event before committing a status: a job refused in the queue (503)
        // or by the engine (400) gets its real status, streaming or not.
        let first: StreamEvent
        do { first = try await job.next() } catch {
            job.end()
            throw error
        }
        if case var .error(e) = first.body {
            job.end()
            job.addHeaders(to: &e)
            throw e
        }
        InferenceJobs.addPrediction(job, to: &responseHeaders)
        if !chat.stream {
            defer { job.end() }
            var answer = ChatAccumulator(n: chat.n, logprobs: chat.logprobs)
            var event = first
            while true {
                switch event.body {
                case let .done(usage):
                    responseHeaders[.contentType] = "application/json"
                    if job.prediction != nil { InferenceJobs.addAchieved(job, completionTokens: usage.completionTokens, to: &responseHeaders) }
                    return Response(status: .ok, headers: responseHeaders,
                                    body: .init(byteBuffer: ByteBuffer(bytes: writer.completion(choices: answer.choices, usage: usage))))
                case var .error(e):
                    job.addHeaders(to: &e)
                    throw e
                default:
                    answer.add(event.body)
                }
                event = try await job.next()
            }
        }

        responseHeaders[.contentType] = "text/event-stream"
        responseHeaders[.cacheControl] = "no-cache"
        let n = chat.n
        return Response(status: .ok, headers: responseHeaders, body: ResponseBody { out in
            // However the body ends — answered, failed, or the client gone — the job ends with it:
            // its slot freed, the worker cancelled if it still runs. Its usage is settled from the
            // worker's report, so a client that leaves is billed for what was generated.
            defer { job.end() }
            var roleSent = [Bool](repeating: false, count: n)
            var event = first
            var buffer = ByteBuffer()
            while true {
                var terminal = false
                switch event.body {
                case let .delta(index, text, logprobs, _) where (0..<n).contains(index):
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
                    if writer.includeUsage { SSE.append(writer.usageChunk(usage), to: &buffer) }
                    if let p = job.prediction {
                        let a = job.achieved(completionTokens: usage.completionTokens)
                        SSE.append(writer.timingChunk(ttftMs: a.ttftMs, tpotMs: a.tpotMs, predictedTTFTMs: p.ttftMs, predictedTPOTMs: p.tpotMs), to: &buffer)
                    }
                    buffer.writeBytes(SSE.done)
                    terminal = true
                case let .error(e):
                    // Mid-stream failure: an error event (the OpenAI SDK raises on it), no [DONE].
                    SSE.append(Array(e.jsonBody.utf8), to: &buffer)
                    terminal = true
                default: break
                }
                // Batch: while more events have already arrived, keep appending; write once.
                if terminal || !job.hasBuffered {
                    do { try await out.write(buffer) } catch { return }   // the client is gone
                    buffer.clear()
                }
                if terminal { break }
                do { event = try await job.next() } catch let e as APIError {
                    try? await out.write(ByteBuffer(bytes: SSE.event(Array(e.jsonBody.utf8))))
                    break
                } catch {
                    return
                }
            }
            try await out.finish(nil)
        })
    }
}
