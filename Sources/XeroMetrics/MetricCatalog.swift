/// Every metric family the platform exports, by the process that exports it. docs/operations.md
/// lists the same table; the e2e suite scrapes each process and checks both agree.
public enum MetricCatalog {
    static let requestLabels = ["model_name", "tier"]

    // Buckets in seconds: vLLM's, with finer steps below 10 ms, where a CPU platform's
    // gateway-side latencies live.
    static let ttftBuckets: [Double] = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20,
                                        40, 80, 160, 640]
    static let itlBuckets: [Double] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1,
                                       2.5, 5, 10, 20, 40, 80]
    static let e2eBuckets: [Double] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120,
                                       240, 480, 960, 1920, 7680]
    static let queueBuckets: [Double] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300,
                                         600, 1800, 3600, 86400]

    // MARK: Gateways and batch runners (the job client, per request)

    public static let timeToFirstToken = MetricSpec(
        "time_to_first_token_seconds", .histogram, "Time from a request's arrival to its first generated token, seconds (chat).",
        labels: requestLabels, buckets: ttftBuckets)
    public static let interTokenLatency = MetricSpec(
        "inter_token_latency_seconds", .histogram, "Time between a request's consecutive token events as the gateway receives them, seconds (chat).",
        labels: requestLabels, buckets: itlBuckets)
    public static let e2eRequestLatency = MetricSpec(
        "e2e_request_latency_seconds", .histogram, "Time from a request's arrival to its last event, seconds.",
        labels: requestLabels, buckets: e2eBuckets)
    public static let promptTokens = MetricSpec(
        "prompt_tokens_total", .counter, "Prompt tokens of finished requests.", labels: requestLabels)
    public static let generationTokens = MetricSpec(
        "generation_tokens_total", .counter, "Generated tokens of finished requests.", labels: requestLabels)
    public static let requestSuccess = MetricSpec(
        "request_success_total", .counter, "Requests that finished with an answer, by finish reason.",
        labels: requestLabels + ["finished_reason"])
    public static let requestError = MetricSpec(
        "request_error_total", .counter, "Requests that ended in an error (refusals, timeouts, failures, clients gone), by HTTP status and error code.",
        labels: requestLabels + ["status", "code"])
    public static let rateLimitRefusals = MetricSpec(
        "rate_limit_refusals_total", .counter, "Requests refused by a rate limit, by the limit.", labels: ["tier", "limit"])
    public static let requestsInFlight = MetricSpec(
        "gateway_requests_in_flight", .gauge, "Requests this process submitted that have not ended.", labels: requestLabels)

    // MARK: Routers

    public static let requestQueueTime = MetricSpec(
        "request_queue_time_seconds", .histogram, "Time from a request's arrival to its dispatch to a worker, seconds.",
        labels: requestLabels, buckets: queueBuckets)
    public static let requestsWaiting = MetricSpec(
        "num_requests_waiting", .gauge, "Requests queued in the router's tier queue (its queue depth).", labels: ["tier"])
    public static let requestsRunning = MetricSpec(
        "num_requests_running", .gauge, "Requests the router dispatched that have not finished.", labels: ["tier"])
    public static let routerWorkers = MetricSpec(
        "router_workers", .gauge, "Workers joined to this router, by state (ready, draining, tripped).", labels: ["state"])
    public static let routerJobs = MetricSpec(
        "router_jobs_total", .counter, "Jobs the router ended, by how (done, cancelled, expired, refused, failed).", labels: ["tier", "outcome"])

    // MARK: Workers

    public static let workerSlotsBusy = MetricSpec("worker_slots_busy", .gauge, "Slots of this worker running a job.")
    public static let workerSlotsFree = MetricSpec("worker_slots_free", .gauge, "Slots of this worker free for a job.")
    public static let kvCacheBytes = MetricSpec(
        "kv_cache_bytes", .gauge, "Bytes of KV state this worker's engine holds (running sequences and cached prefixes).")
    public static let kvCacheUsage = MetricSpec(
        "kv_cache_usage_perc", .gauge, "The prefix cache's bytes over its budget, 0 to 1.")
    public static let prefixCacheQueries = MetricSpec(
        "prefix_cache_queries_total", .counter, "Prompt tokens looked up in the prefix cache.", labels: ["model_name"])
    public static let prefixCacheHits = MetricSpec(
        "prefix_cache_hits_total", .counter, "Prompt tokens found in the prefix cache (not recomputed).", labels: ["model_name"])
    public static let workerJobs = MetricSpec(
        "worker_jobs_total", .counter, "Jobs this worker ended, by outcome (done, cancelled, timeout, rejected, error).",
        labels: ["model_name", "outcome"])

    public static let engineSteps = MetricSpec(
        "engine_steps_total", .counter, "Forward passes of this worker's engine batch loop (built-in engine).")
    public static let engineStepTokens = MetricSpec(
        "engine_step_tokens_total", .counter, "Tokens those passes took: one per decoding sequence (decode), prompt tokens computed (prefill).",
        labels: ["kind"])
    public static let engineBusy = MetricSpec(
        "engine_busy_seconds_total", .counter, "Seconds this worker's engine spent in forward passes.")

    public static let jobClient = [timeToFirstToken, interTokenLatency, e2eRequestLatency, promptTokens, generationTokens, requestSuccess,
                                   requestError, rateLimitRefusals, requestsInFlight]
    public static let router = [requestQueueTime, requestsWaiting, requestsRunning, routerWorkers, routerJobs]
    public static let worker = [workerSlotsBusy, workerSlotsFree, kvCacheBytes, kvCacheUsage, prefixCacheQueries, prefixCacheHits, workerJobs,
                               engineSteps, engineStepTokens, engineBusy]
    public static let all = jobClient + router + worker
}
