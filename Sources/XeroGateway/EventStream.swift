import Hummingbird
import NIOCore
import XeroCore
import XeroJobs

/// What every generating route does with its job's events, whatever the answer's shape: wait for
/// the first event before committing a status, and stream the rest as SSE — writing once per batch
/// of events already arrived, ending on the terminal event, an error event (no `[DONE]`, so the
/// OpenAI SDK raises), or the client leaving.
enum EventStream {
    /// The job's first event. A job refused in the queue (503) or by the engine (400) throws its
    /// real status, streaming or not; the job is then ended.
    static func first(_ job: JobHandle) async throws -> StreamEvent {
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
        return first
    }

    /// Every event from `first` on into `add`, until `done`, whose usage is returned; an error
    /// event throws it, with the job's headers. (The non-streaming answer; the caller ends the job.)
    static func collect(_ job: JobHandle, first: StreamEvent, _ add: (StreamEvent.Body) -> Void) async throws -> Usage {
        var event = first
        while true {
            switch event.body {
            case let .done(usage): return usage
            case var .error(e):
                job.addHeaders(to: &e)
                throw e
            default: add(event.body)
            }
            event = try await job.next()
        }
    }

    /// Streams from `first` on. `render` appends an event's SSE chunks to the buffer, with `state`
    /// it keeps across events (which choices have had their role chunk, text offsets), and says
    /// whether it was the terminal one (`done`); errors are handled here. However the body ends —
    /// answered, failed, or the client gone — the job ends with it: its slot freed, the worker
    /// cancelled if it still runs; its usage is settled from the worker's report, so a client that
    /// leaves is billed for what was generated.
    static func body<State: Sendable>(_ job: JobHandle, first: StreamEvent, state initial: State,
                                      render: @escaping @Sendable (StreamEvent.Body, inout ByteBuffer, inout State) -> Bool) -> ResponseBody {
        ResponseBody { out in
            defer { job.end() }
            var state = initial
            var event = first
            var buffer = ByteBuffer()
            while true {
                let terminal: Bool
                if case let .error(e) = event.body {
                    SSE.append(Array(e.jsonBody.utf8), to: &buffer)
                    terminal = true
                } else {
                    terminal = render(event.body, &buffer, &state)
                }
                // While more events have already arrived, keep appending; write once.
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
        }
    }
}
