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

        let first = try await EventStream.first(job)
        InferenceJobs.addPrediction(job, to: &responseHeaders)
        if !chat.stream {
            defer { job.end() }
            var answer = ChatAccumulator(n: chat.n, logprobs: chat.logprobs)
            let usage = try await EventStream.collect(job, first: first) { answer.add($0) }
            responseHeaders[.contentType] = "application/json"
            if job.prediction != nil { InferenceJobs.addAchieved(job, completionTokens: usage.completionTokens, to: &responseHeaders) }
            return Response(status: .ok, headers: responseHeaders,
                            body: .init(byteBuffer: ByteBuffer(bytes: writer.completion(choices: answer.choices, usage: usage))))
        }

        responseHeaders[.contentType] = "text/event-stream"
        responseHeaders[.cacheControl] = "no-cache"
        let n = chat.n
        // State: which choices have had their first chunk (the one carrying the role).
        return Response(status: .ok, headers: responseHeaders, body: EventStream.body(job, first: first, state: [Bool](repeating: false, count: n)) {
            body, buffer, roleSent in
            switch body {
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
                return true
            default: break
            }
            return false
        })
    }
}
