"""Metrics, logs and ops views agree with the traffic that made them. A deployment of its own with
simulated engines (`sim`: the tests are about the platform's accounting, not the model): requests
through the OpenAI SDK, then each process's /metrics scraped on its --metrics-port, the gateway's
JSON log read, and `xeroctl ops` compared with Redis."""
import json
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from conftest import BIN, Platform, client_for, free_port, wait_for
from metrics import delta, scrape, total

XEROCTL = str(BIN).replace("xerotier", "xeroctl")

# Tier names are this module's own: tier records and indexes in Redis are shared by every
# deployment on the session's Redis.
CONFIG = """
default_endpoint_tier: metered
project_tiers: [metered, held, limited, batch]
tiers:
  - {name: metered, priority: 5, weight: 1, queue_timeout_ms: 30000, request_timeout_ms: 30000}
  - {name: held, priority: 5, weight: 1, queue_timeout_ms: 30000, request_timeout_ms: 30000}
  - {name: limited, priority: 5, weight: 1, queue_timeout_ms: 30000, request_timeout_ms: 30000, requests_per_minute: 2}
  - {name: batch, priority: 0, weight: 0, queue_timeout_ms: 86400000, request_timeout_ms: 30000}
"""


@pytest.fixture(scope="module")
def mp(redis, tmp_path_factory):
    p = Platform(redis, tmp_path_factory.mktemp("metrics"), config=CONFIG)
    p.ports = {name: free_port() for name in ("router", "gateway", "fast", "slow")}
    p.start_router("--metrics-port", str(p.ports["router"]))
    p.gateway = p.start_gateway("gateway", "--metrics-port", str(p.ports["gateway"]), "--log-format", "json")
    p.start_worker("m-fast", "--models", "fast-model", "--sim-tpot-ms", "2", "--sim-answer-tokens", "12",
                   "--metrics-port", str(p.ports["fast"]), "--log-format", "json")
    p.start_worker("m-slow", "--models", "slow-model", "--slots", "1", "--sim-tpot-ms", "40", "--sim-answer-tokens", "30",
                   "--metrics-port", str(p.ports["slow"]))
    p.fast = p.bootstrap(project="metrics", endpoint="fast", model="fast-model", tier="metered")
    p.slow = p.bootstrap(project="metrics", endpoint="slow", model="slow-model", tier="held")
    p.limited = p.bootstrap(project="metrics", endpoint="limited", model="fast-model", tier="limited")
    p.admin_key = p.create_admin_key()
    yield p
    p.shutdown()


def xeroctl(p, *args):
    out = subprocess.run([XEROCTL, *args, "--base-url", p.gateway, "--key", p.admin_key], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_metrics_match_the_traffic(mp):
    client = client_for(mp.gateway, mp.fast)
    before = {name: scrape(port) for name, port in mp.ports.items()}
    n = 24
    timings, usages, ids = [], [], []
    lock = threading.Lock()

    def one(i):
        start = time.time()
        if i % 2:
            stream = client.chat.completions.create(model="fast-model", messages=[{"role": "user", "content": f"count {i}"}],
                                                    stream=True, stream_options={"include_usage": True})
            chunks = list(stream)
            usage, rid = chunks[-1].usage, chunks[0].id
        else:
            r = client.chat.completions.create(model="fast-model", messages=[{"role": "user", "content": f"count {i}"}])
            usage, rid = r.usage, r.id
        with lock:
            timings.append(time.time() - start)
            usages.append(usage)
            ids.append(rid)

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(one, range(n)))
    time.sleep(0.3)   # the router's gauges refresh every 100 ms, workers' every tick
    after = {name: scrape(port) for name, port in mp.ports.items()}
    g0, g1 = before["gateway"], after["gateway"]
    labels = {"model_name": "fast-model", "tier": "metered"}

    # Every request counted once, in every histogram, with its finish reason.
    assert delta(g0, g1, "xerotier:request_success_total", **labels) == n
    assert delta(g0, g1, "xerotier:request_success_total", finished_reason="stop", **labels) == n
    assert delta(g0, g1, "xerotier:request_error_total", **labels) == 0
    for h in ("time_to_first_token_seconds", "e2e_request_latency_seconds"):
        assert delta(g0, g1, f"xerotier:{h}_count", **labels) == n, h
    assert delta(g0, g1, "xerotier:prompt_tokens_total", **labels) == sum(u.prompt_tokens for u in usages)
    assert delta(g0, g1, "xerotier:generation_tokens_total", **labels) == sum(u.completion_tokens for u in usages)
    # 12 tokens each: at most 11 gaps a request (a delta may carry several tokens), and some.
    itl = delta(g0, g1, "xerotier:inter_token_latency_seconds_count", **labels)
    assert 0 < itl <= n * 11
    assert total(g1, "xerotier:gateway_requests_in_flight", **labels) == 0

    # Sums are plausible against the client's own clock: the gateway's view sits inside it.
    e2e = delta(g0, g1, "xerotier:e2e_request_latency_seconds_sum", **labels)
    ttft = delta(g0, g1, "xerotier:time_to_first_token_seconds_sum", **labels)
    assert 0 < ttft < e2e <= sum(timings)
    assert e2e > 0.3 * sum(timings)    # not some other clock: most of what the client waited
    # Each request waited at least its 12 simulated tokens of 2 ms.
    assert e2e >= n * 12 * 0.002

    # The router dispatched each once and saw each end; the worker ran each.
    r0, r1 = before["router"], after["router"]
    assert delta(r0, r1, "xerotier:request_queue_time_seconds_count", **labels) == n
    assert delta(r0, r1, "xerotier:router_jobs_total", tier="metered", outcome="done") == n
    assert total(r1, "xerotier:num_requests_waiting", tier="metered") == 0
    assert total(r1, "xerotier:router_workers", state="ready") == 2
    assert delta(before["fast"], after["fast"], "xerotier:worker_jobs_total", model_name="fast-model", outcome="done") == n
    assert total(after["fast"], "xerotier:worker_slots_busy") == 0
    assert total(after["slow"], "xerotier:worker_slots_free") == 1
    # Hummingbird's own per-route counter saw the same requests (`hb_requests`; the client parser adds `_total`).
    route = "/{project}/{endpoint}/v1/chat/completions"
    assert delta(g0, g1, "hb_requests_total", http_route=route, http_response_status_code="200") == n

    # JSON logs: every line parses; each request left one `request ended` line on the gateway and
    # one `job ended` line, naming its worker, on the worker.
    def lines(name):
        return [json.loads(l) for l in mp.log(name).splitlines() if l.startswith("{")]
    gateway_lines = lines("gateway")
    assert gateway_lines and all({"ts", "level", "logger", "message"} <= set(l) for l in gateway_lines)
    ended = {l["request_id"]: l for l in gateway_lines if l["message"] == "request ended"}
    for rid in ids:
        line = ended[rid]
        assert (line["project"], line["endpoint"], line["tier"], line["model"], line["status"]) == \
               (mp.fast["project_id"], "fast", "metered", "fast-model", "200")
    worker_ended = {l["request_id"]: l for l in lines("m-fast") if l["message"] == "job ended"}
    assert all(worker_ended[rid]["worker"] == "m-fast" and worker_ended[rid]["outcome"] == "done" for rid in ids)


def test_waiting_gauge_and_ops_views_while_a_queue_is_held(mp):
    """One slot, five streams of ~1.2 s: four wait. The router's gauge, the tier's index in Redis
    and `xeroctl ops` all show them, and all clear when the queue drains."""
    client = client_for(mp.gateway, mp.slow)
    results = []

    def one(i):
        text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="slow-model", messages=[{"role": "user", "content": f"wait {i}"}], stream=True) if c.choices)
        results.append(text)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: total(scrape(mp.ports["router"]), "xerotier:num_requests_waiting", tier="held") >= 3, timeout=5,
                 what="the waiting gauge to rise")
        assert total(scrape(mp.ports["gateway"]), "xerotier:gateway_requests_in_flight", tier="held") == 5
        assert total(scrape(mp.ports["slow"]), "xerotier:worker_slots_busy") == 1

        # The index in Redis (written with the other ops records, every 20 ms) and the ops views agree.
        def indexed():
            return mp.redis.cli("ZRANGE", "xero:waiting:held", "0", "-1").split()
        wait_for(lambda: len(indexed()) >= 3, timeout=3, what="the waiting index")
        listed = json.loads(xeroctl(mp, "ops", "jobs", "--tier", "held", "--json"))["data"]
        in_redis = set(indexed())
        assert len(listed) >= 3 and {j["id"] for j in listed} <= in_redis | {j["id"] for j in listed if j["state"] != "queued"}
        assert all(j["tier"] == "held" and j["state"] == "queued" and j["endpoint"] == "slow" for j in listed)
        assert [j["age_ms"] for j in listed] == sorted((j["age_ms"] for j in listed), reverse=True)   # oldest first
        one_job = json.loads(xeroctl(mp, "ops", "job", listed[0]["id"], "--json"))
        record = dict(zip(*[iter(mp.redis.cli("HGETALL", f"xero:job:{listed[0]['id']}").split("\n"))] * 2))
        assert one_job["project"] == record["project"] and one_job["tier"] == "held"
        running = json.loads(xeroctl(mp, "ops", "jobs", "--tier", "held", "--state", "running", "--json"))["data"]
        assert len(running) == 1 and running[0]["worker"] == "m-slow"
        queues = {q["tier"]: q for q in json.loads(xeroctl(mp, "ops", "queues", "--json"))["data"]}
        assert queues["held"]["depth"] >= 2 and queues["held"]["inflight"] == 1
        # The worker's record is rewritten at the router's stats tick (100 ms) once its counts move.
        def slow_worker():
            return {w["id"]: w for w in json.loads(xeroctl(mp, "ops", "workers", "--json"))["data"]}["m-slow"]
        wait_for(lambda: slow_worker()["inflight"] == 1, timeout=3, what="the worker's record to show its job")
        assert slow_worker()["slots"] == 1 and slow_worker()["free"] == 0
        # The table views print digits and durations, and --watch redraws.
        table = xeroctl(mp, "ops", "queues")
        assert "held" in table and "TIER" in table
        frames = xeroctl(mp, "ops", "jobs", "--tier", "held", "--watch", "--interval", "0.2", "--watch-count", "2")
        assert frames.count("every 0.2s") == 2 and "AGE_MS" in frames
    finally:
        # Even when an assertion above fails, no stream outlives this test into the next one's counts.
        for t in threads:
            t.join(30)
    assert len(results) == 5 and all(results)
    time.sleep(0.3)
    assert total(scrape(mp.ports["router"]), "xerotier:num_requests_waiting", tier="held") == 0
    assert total(scrape(mp.ports["gateway"]), "xerotier:gateway_requests_in_flight", tier="held") == 0
    wait_for(lambda: indexed() == [] and mp.redis.cli("ZCARD", "xero:running:held") == "0", timeout=3, what="the indexes to empty")
    assert json.loads(xeroctl(mp, "ops", "jobs", "--tier", "held", "--json"))["data"] == []


def test_rate_limit_refusals_and_errors_are_counted(mp):
    client = client_for(mp.gateway, mp.limited)
    before = scrape(mp.ports["gateway"])
    answered = refused = 0
    for i in range(4):
        try:
            client.chat.completions.create(model="fast-model", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
            answered += 1
        except openai.RateLimitError:
            refused += 1
    after = scrape(mp.ports["gateway"])
    assert answered == 2 and refused == 2
    assert delta(before, after, "xerotier:rate_limit_refusals_total", tier="limited", limit="key_requests") == 2
    assert delta(before, after, "xerotier:request_error_total", tier="limited", status="429", code="rate_limit_exceeded") == 2
    assert delta(before, after, "xerotier:request_success_total", tier="limited") == 2
    assert delta(before, after, "hb_requests_total", http_response_status_code="429") == 2


def test_a_client_that_leaves_is_counted_as_client_closed(mp):
    before = scrape(mp.ports["gateway"])
    with httpx.stream("POST", mp.gateway + mp.slow["base_path"] + "/chat/completions", timeout=30,
                      headers={"Authorization": f"Bearer {mp.slow['api_key']}"},
                      json={"model": "slow-model", "stream": True, "messages": [{"role": "user", "content": "leave"}]}) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                break   # one chunk, then hang up
    labels = {"model_name": "slow-model", "tier": "held"}
    wait_for(lambda: delta(before, scrape(mp.ports["gateway"]), "xerotier:request_error_total", status="499", code="client_closed",
                           **labels) == 1, timeout=5, what="the abandoned request to be counted")
    after = scrape(mp.ports["gateway"])
    assert delta(before, after, "xerotier:request_success_total", **labels) == 0
    assert delta(before, after, "xerotier:e2e_request_latency_seconds_count", **labels) == 1
    wait_for(lambda: total(scrape(mp.ports["gateway"]), "xerotier:gateway_requests_in_flight", **labels) == 0, timeout=5,
             what="in-flight to drop")


def test_metrics_stay_off_the_public_port(mp):
    assert httpx.get(mp.gateway + "/metrics").status_code == 404
    metrics_base = f"http://127.0.0.1:{mp.ports['gateway']}"
    assert httpx.get(metrics_base + "/health").status_code == 404
    r = httpx.get(metrics_base + "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    # A port already taken stops the process with a clear reason instead of running unobserved.
    out = subprocess.run([BIN, "router", "--config", str(mp.config), "--redis", mp.redis.url, "--router-port", str(free_port()),
                          "--metrics-port", str(mp.ports["router"])], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and f"cannot serve metrics on 127.0.0.1:{mp.ports['router']}" in out.stderr


def test_ops_views_refuse_bad_input_and_non_admins(mp):
    admin = {"Authorization": f"Bearer {mp.admin_key}"}
    base = mp.gateway + "/manage/v1/ops"
    for query in ("state=bogus", "tier=no-such-tier", "limit=0", "limit=1001", "limit=abc"):
        r = httpx.get(f"{base}/jobs?{query}", headers=admin)
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error", (query, r.text)
    r = httpx.get(f"{base}/jobs/no-such-job", headers=admin)
    assert r.status_code == 404 and r.json()["error"]["code"] == "job_not_found"
    assert httpx.get(f"{base}/jobs/" + "x" * 300, headers=admin).status_code == 404
    # A project's management key is not the admin: the ops views show every tenant's jobs.
    manager = subprocess.run([BIN, "admin", "create-key", "--redis", mp.redis.url, "--project-slug", "metrics", "--scopes", "management"],
                             capture_output=True, text=True, check=True).stdout.strip()
    for path in ("/queues", "/workers", "/jobs", "/jobs/x"):
        r = httpx.get(base + path, headers={"Authorization": f"Bearer {manager}"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope", (path, r.text)
