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

        let first = try await EventStream.first(job)
        InferenceJobs.addPrediction(job, to: &responseHeaders)
        if !request.stream {
            defer { job.end() }
            var answer = CompletionAccumulator(choices: choices)
            let usage = try await EventStream.collect(job, first: first) { answer.add($0) }
            responseHeaders[.contentType] = "application/json"
            if job.prediction != nil { InferenceJobs.addAchieved(job, completionTokens: usage.completionTokens, to: &responseHeaders) }
            let json = writer.completion(choices: answer.choices, logprobs: completion.logprobs != nil, usage: usage)
            return Response(status: .ok, headers: responseHeaders, body: .init(byteBuffer: ByteBuffer(bytes: json)))
        }

        responseHeaders[.contentType] = "text/event-stream"
        responseHeaders[.cacheControl] = "no-cache"
        // State: the offset into each choice's text, for the legacy logprobs' `text_offset`.
        let offsets = [Int](repeating: 0, count: choices)
        return Response(status: .ok, headers: responseHeaders, body: EventStream.body(job, first: first, state: offsets) { body, buffer, offsets in
            switch body {
            case let .delta(index, text, logprobs, _) where (0..<choices).contains(index):
                SSE.append(writer.chunk(index: index, text: text, entries: logprobs.map { [$0] } ?? [], offset: &offsets[index]), to: &buffer)
            case let .finish(index, reason) where (0..<choices).contains(index):
                SSE.append(writer.chunk(index: index, text: "", entries: [], offset: &offsets[index], finishReason: reason), to: &buffer)
            case let .done(usage):
                if writer.includeUsage { SSE.append(writer.usageChunk(usage), to: &buffer) }
                buffer.writeBytes(SSE.done)
                return true
            default: break
            }
            return false
        })
    }
}
