import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import XeroCore
import XeroJobs

/// `POST …/v1/completions`: OpenAI's text completions. The same job path as chat (validate, apply
/// the tier's defaults, admit, run, settle); only the answer's shape differs: `text_completion`
/// objects, choices numbered prompt by prompt, legacy logprobs (docs/completions.md).
struct TextCompletions: Sendable {
    let jobs: InferenceJobs

    func handle(_ body: [UInt8], caller: CallerContext, headers: HTTPFields) async throws -> Response {
        var request = try CompletionRequest.parse(body)
        let account = try jobs.account(for: caller)
        var body = body
        RequestDefaults.apply(to: &request, body: &body, tier: account.tier)
        let completion = request.completion!
        let choices = completion.choiceCount(n: request.n)
        let job = try await jobs.client.start(account, kind: .textCompletion, payload: body, reserve: Reservation.tokens(for: request),
                                              prefixBlocks: PromptBlocks.hashes(request, partition: account.project), slo: InferenceJobs.slo(headers))
        let writer = CompletionResponseWriter(id: "cmpl-" + job.requestId.drop(while: { $0 != "-" }).dropFirst(), created: Int(nowMs() / 1000),
                                              model: caller.endpoint.model, includeUsage: request.includeUsage)
        var responseHeaders = InferenceJobs.responseHeaders(job)

        // As for chat: the first event decides the status (a refusal in the queue or by the engine).
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
        if !request.stream {
            defer { job.end() }
            var answer = CompletionAccumulator(choices: choices)
            var event = first
            while true {
                switch event.body {
                case let .done(usage):
                    responseHeaders[.contentType] = "application/json"
                    if job.prediction != nil { InferenceJobs.addAchieved(job, completionTokens: usage.completionTokens, to: &responseHeaders) }
                    let json = writer.completion(choices: answer.choices, logprobs: completion.logprobs != nil, usage: usage)
                    return Response(status: .ok, headers: responseHeaders, body: .init(byteBuffer: ByteBuffer(bytes: json)))
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
        return Response(status: .ok, headers: responseHeaders, body: ResponseBody { out in
            // However the body ends, the job ends with it (slot freed, worker cancelled if still
            // running); its usage is settled from the worker's report.
            defer { job.end() }
            var offsets = [Int](repeating: 0, count: choices)
            var event = first
            var buffer = ByteBuffer()
            while true {
                var terminal = false
                switch event.body {
                case let .delta(index, text, logprobs, _) where (0..<choices).contains(index):
                    SSE.append(writer.chunk(index: index, text: text, entries: logprobs.map { [$0] } ?? [], offset: &offsets[index]), to: &buffer)
                case let .finish(index, reason) where (0..<choices).contains(index):
                    SSE.append(writer.chunk(index: index, text: "", entries: [], offset: &offsets[index], finishReason: reason), to: &buffer)
                case let .done(usage):
                    if writer.includeUsage { SSE.append(writer.usageChunk(usage), to: &buffer) }
                    buffer.writeBytes(SSE.done)
                    terminal = true
                case let .error(e):
                    SSE.append(Array(e.jsonBody.utf8), to: &buffer)
                    terminal = true
                default: break
                }
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
