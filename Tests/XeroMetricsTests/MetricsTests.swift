import XCTest
@testable import XeroMetrics

final class MetricsTests: XCTestCase {
    func exposition(_ m: PlatformMetrics) -> String { String(decoding: m.exposition(), as: UTF8.self) }

    func testTheCatalogIsValidPrometheus() {
        let names = MetricCatalog.all.map(\.name)
        XCTAssertEqual(Set(names).count, names.count, "a family declared twice")
        let valid = try! NSRegularExpression(pattern: "^xerotier:[a-z][a-z0-9_]*$")
        for spec in MetricCatalog.all {
            XCTAssertNotNil(valid.firstMatch(in: spec.name, range: NSRange(spec.name.startIndex..., in: spec.name)), spec.name)
            XCTAssertFalse(spec.help.isEmpty, spec.name)
            XCTAssertEqual(spec.kind == .counter, spec.name.hasSuffix("_total"), "counters and only counters end in _total: \(spec.name)")
            if spec.kind == .histogram {
                XCTAssertEqual(spec.buckets, spec.buckets.sorted(), spec.name)
                XCTAssertEqual(Set(spec.buckets).count, spec.buckets.count, spec.name)
                XCTAssertTrue(spec.name.hasSuffix("_seconds"), spec.name)
            } else {
                XCTAssertTrue(spec.buckets.isEmpty, spec.name)
            }
        }
        // Names that exist in vLLM keep vLLM's suffix.
        for vllm in ["time_to_first_token_seconds", "inter_token_latency_seconds", "e2e_request_latency_seconds", "request_queue_time_seconds",
                     "num_requests_waiting", "num_requests_running", "prompt_tokens_total", "generation_tokens_total", "request_success_total",
                     "prefix_cache_queries_total", "prefix_cache_hits_total", "kv_cache_usage_perc"] {
            XCTAssertTrue(names.contains("xerotier:" + vllm), vllm)
        }
    }

    func testARequestIsCountedWithItsLabels() {
        let m = PlatformMetrics()
        let r = RequestMetrics(m)
        let i = r.instruments(tier: "standard", model: "smol")
        XCTAssertTrue(i === r.instruments(tier: "standard", model: "smol"), "instruments are made once per tier and model")
        i.timeToFirstToken.record(0.003)
        i.succeeded(reason: "stop", promptTokens: 7, generationTokens: 5)
        i.succeeded(reason: "stop", promptTokens: 3, generationTokens: -2)   // a negative count from a peer adds nothing
        i.failed(status: 429, code: "rate_limit_exceeded")
        i.failed(status: 9999, code: "weird")
        let text = exposition(m)
        XCTAssertTrue(text.contains(#"xerotier:request_success_total{model_name="smol",tier="standard",finished_reason="stop"} 2"#), text)
        XCTAssertTrue(text.contains(#"xerotier:prompt_tokens_total{model_name="smol",tier="standard"} 10"#), text)
        XCTAssertTrue(text.contains(#"xerotier:generation_tokens_total{model_name="smol",tier="standard"} 5"#), text)
        XCTAssertTrue(text.contains(#"xerotier:request_error_total{model_name="smol",tier="standard",status="429",code="rate_limit_exceeded"} 1"#), text)
        XCTAssertTrue(text.contains(#"status="other",code="weird""#), text)
        XCTAssertTrue(text.contains(#"xerotier:time_to_first_token_seconds_bucket{model_name="smol",tier="standard",le="0.005"} 1"#), text)
        XCTAssertTrue(text.contains(#"xerotier:time_to_first_token_seconds_bucket{model_name="smol",tier="standard",le="0.0025"} 0"#), text)
        XCTAssertTrue(text.contains("# HELP xerotier:time_to_first_token_seconds "), text)
    }

    func testRefusalCountersStartAtZero() {
        let m = PlatformMetrics()
        RequestMetrics(m).prepareRefusals(tiers: ["standard"], limits: ["key_requests"])
        XCTAssertTrue(exposition(m).contains(#"xerotier:rate_limit_refusals_total{tier="standard",limit="key_requests"} 0"#))
    }

    func testUntrustedLabelsAreCleanedAndBounded() {
        let labels = BoundedLabels()
        XCTAssertEqual(labels.admit("stop", family: "f"), "stop")
        XCTAssertEqual(labels.admit("tool calls\n\"}", family: "f"), "tool_calls___")
        XCTAssertEqual(labels.admit("", family: "f"), "none")
        XCTAssertEqual(BoundedLabels.clean(String(repeating: "x", count: 500)).count, BoundedLabels.maxLength)
        for i in 0..<100 { _ = labels.admit("reason-\(i)", family: "g") }
        XCTAssertEqual(labels.admit("reason-5", family: "g"), "reason-5", "values admitted before the cap stay")
        XCTAssertEqual(labels.admit("reason-99", family: "g"), "other")
        XCTAssertEqual(labels.admit("stop", family: "f"), "stop", "families are bounded separately")
    }

    func testAHostileWorkerCannotGrowTheRegistry() {
        let m = PlatformMetrics()
        let i = RequestMetrics(m).instruments(tier: "t", model: "m")
        for n in 0..<10_000 { i.succeeded(reason: "r\(n)", promptTokens: 0, generationTokens: 0) }
        let series = exposition(m).split(separator: "\n").filter { $0.hasPrefix("xerotier:request_success_total{") }
        XCTAssertEqual(series.count, BoundedLabels.maxValues + 1)   // 32 reasons and `other`
    }

    func testWorkerOutcomesAreCountedByKind() {
        let m = PlatformMetrics()
        let w = WorkerMetrics(m)
        w.jobEnded(model: "smol", outcome: "rejected:context_length_exceeded")
        w.jobEnded(model: "smol", outcome: "done")
        w.slots(busy: 3, free: -1)
        let text = exposition(m)
        XCTAssertTrue(text.contains(#"xerotier:worker_jobs_total{model_name="smol",outcome="rejected"} 1"#), text)
        XCTAssertTrue(text.contains("xerotier:worker_slots_free 0.0"), text)
        XCTAssertTrue(text.contains("xerotier:worker_slots_busy 3.0"), text)
    }

    func testEngineStepCountersAdvanceByWhatIsNewAndSurviveARestartedEngine() {
        let m = PlatformMetrics()
        let w = WorkerMetrics(m)
        w.engineSteps(.init(steps: 10, decodeTokens: 70, prefillTokens: 30, busySeconds: 0.5))
        w.engineSteps(.init(steps: 10, decodeTokens: 70, prefillTokens: 30, busySeconds: 0.5))   // nothing new
        w.engineSteps(.init(steps: 12, decodeTokens: 86, prefillTokens: 30, busySeconds: 0.75))
        w.engineSteps(.init(steps: 3, decodeTokens: 3, prefillTokens: 5, busySeconds: 0.25))      // a new engine: from zero
        let text = exposition(m)
        XCTAssertTrue(text.contains("xerotier:engine_steps_total 15"), text)
        XCTAssertTrue(text.contains(#"xerotier:engine_step_tokens_total{kind="decode"} 89"#), text)
        XCTAssertTrue(text.contains(#"xerotier:engine_step_tokens_total{kind="prefill"} 35"#), text)
        XCTAssertTrue(text.contains("xerotier:engine_busy_seconds_total 1.0"), text)
    }
}
