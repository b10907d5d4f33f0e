"""The router's queues under pressure: projects share a tier fairly, bounded queues answer 429
with Retry-After, a job no live worker could serve gets 503 at once, and a worker that keeps
failing is taken out of dispatch (client errors never count against it). Simulated engine
(`sim`) and an `openai`-engine worker whose upstream is unreachable: the tests are about the
router, not the model."""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import openai
import pytest

from conftest import Platform, client_for, free_port, tier_stat, wait_for

CONFIG = """
default_endpoint_tier: fairshare
project_tiers: [fairshare, bounded, batch]
tiers:
  - {name: fairshare, priority: 5, weight: 1, queue_timeout_ms: 30000, request_timeout_ms: 30000}
  - {name: bounded, priority: 4, weight: 1, queue_timeout_ms: 30000, request_timeout_ms: 30000,
     max_queued: 5, max_queued_per_project: 3}
  - {name: batch, priority: 0, weight: 0, queue_timeout_ms: 86400000, request_timeout_ms: 30000}
"""


@pytest.fixture(scope="module")
def qp(redis, tmp_path_factory):
    p = Platform(redis, tmp_path_factory.mktemp("queueing"), config=CONFIG)
    p.start_router("--worker-grace-ms", "0", "--breaker-cooldown-ms", "60000")
    p.start_gateway()
    yield p
    p.shutdown()


def tier_depth(p, tier):
    return tier_stat(p.redis, tier, "depth")


def chat(c, **kw):
    return c.chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}], **kw)


def test_a_flooding_project_does_not_starve_another(qp):
    """Project `flood` queues 40 jobs on a 2-slot worker (≈300 ms each), then project `calm`
    sends 4. With one FIFO per tier calm would finish after the flood; with projects taking turns
    its jobs run in the next rounds, while most of the flood still waits."""
    qp.start_worker("fair-w", "--slots", "2", "--sim-tpot-ms", "20", "--sim-answer-tokens", "15", "--models", "fair-model")
    flood = qp.bootstrap(project="flood", endpoint="ep", model="fair-model", tier="fairshare")
    calm = qp.bootstrap(project="calm", endpoint="ep", model="fair-model", tier="fairshare")
    done = []   # (project, finished at)
    lock = threading.Lock()

    # Clients made up front: 40 threads each building one under load would trickle in no faster
    # than the worker serves them, and no backlog would form.
    clients = {"flood": [client_for(qp.gateways[0], flood, timeout=60) for _ in range(40)],
               "calm": [client_for(qp.gateways[0], calm, timeout=60) for _ in range(4)]}

    def run(demo, name):
        r = chat(clients[name].pop())
        assert r.choices[0].message.content
        with lock:
            done.append((name, time.monotonic()))

    floods = [threading.Thread(target=run, args=(flood, "flood")) for _ in range(40)]
    for t in floods:
        t.start()
    wait_for(lambda: tier_depth(qp, "fairshare") >= 30, timeout=20, what="the flood queued")
    calms = [threading.Thread(target=run, args=(calm, "calm")) for _ in range(4)]
    for t in calms:
        t.start()
    for t in floods + calms:
        t.join(90)
    order = [name for name, _ in sorted(done, key=lambda d: d[1])]
    assert order.count("flood") == 40 and order.count("calm") == 4
    last_calm = max(i for i, n in enumerate(order) if n == "calm")
    flood_after = order[last_calm + 1:].count("flood")
    print(f"fairness: {flood_after} of 40 flood jobs finished after calm's last; order {''.join(n[0] for n in order)}")
    assert flood_after >= 20, f"calm waited behind the flood: only {flood_after} flood jobs finished after it"
    qp.stop("fair-w")


def test_bounded_queues_answer_429_with_retry_after(qp):
    """`bounded`: at most 3 queued per project and 5 in all. One slot, held by a long job."""
    qp.start_worker("slow-w", "--slots", "1", "--sim-tpot-ms", "100", "--sim-answer-tokens", "50", "--models", "slow-model")
    a = qp.bootstrap(project="qa", endpoint="ep", model="slow-model", tier="bounded")
    b = qp.bootstrap(project="qb", endpoint="ep", model="slow-model", tier="bounded")
    threads, answered = [], []

    def send(demo, max_tokens=2):
        def run():
            r = chat(client_for(qp.gateways[0], demo, timeout=60), max_tokens=max_tokens)
            answered.append(r.choices[0].finish_reason)
        t = threading.Thread(target=run, daemon=True)
        t.start()
        threads.append(t)

    send(a, 50)   # runs for about 5 s
    wait_for(lambda: tier_stat(qp.redis, "bounded", "inflight") == 1, what="the first job running")
    for n in range(3):
        send(a)
        wait_for(lambda: tier_depth(qp, "bounded") == n + 1, what=f"{n + 1} queued")
    url = qp.gateways[0] + a["base_path"] + "/chat/completions"
    body = {"model": "x", "messages": [{"role": "user", "content": "one too many"}], "max_tokens": 2}
    r = httpx.post(url, json=body, headers={"Authorization": f"Bearer {a['api_key']}"}, timeout=30)
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "project_queue_full"
    assert int(r.headers["retry-after"]) >= 1
    # Another project still gets in, up to the tier's total of 5.
    send(b)
    send(b)
    wait_for(lambda: tier_depth(qp, "bounded") == 5, what="5 queued")
    r = httpx.post(qp.gateways[0] + b["base_path"] + "/chat/completions", json=body,
                   headers={"Authorization": f"Bearer {b['api_key']}"}, timeout=30)
    assert r.status_code == 429 and r.json()["error"]["code"] == "queue_full", r.text
    assert "retry-after" in r.headers
    # The SDK sees the same as a RateLimitError.
    with pytest.raises(openai.RateLimitError):
        chat(client_for(qp.gateways[0], b), max_tokens=2)
    # Every job that was let in is answered.
    for t in threads:
        t.join(60)
    assert answered.count("length") == 6, answered
    qp.stop("slow-w", timeout=30)


def test_a_job_no_live_worker_could_serve_gets_503_at_once(qp):
    """No worker serves `ghost-model` at all: 503 now, not after the 30 s queue timeout."""
    demo = qp.bootstrap(project="ghosts", endpoint="ep", model="ghost-model", tier="fairshare")
    t0 = time.monotonic()
    with pytest.raises(openai.APIStatusError) as e:
        chat(client_for(qp.gateways[0], demo))
    assert e.value.status_code == 503 and e.value.body["code"] == "no_worker_available"
    assert time.monotonic() - t0 < 10, "answered at once, not after the queue timeout"


def fake_upstream(status, code):
    """An OpenAI-compatible upstream that answers every request with `status`: 500 is its own
    failure, 400 the client's fault."""
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length", 0)))
            body = json.dumps({"error": {"message": f"upstream says {status}", "type": "invalid_request_error" if status < 500 else "server_error",
                                         "code": code}}).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def worker_field(p, worker, field):
    return p.redis.cli("HGET", f"xero:worker:{worker}", field)


def test_a_failing_worker_is_taken_out_and_client_errors_never_count(qp):
    # `broken`'s upstream fails every job (500 → 502 to the client); `steady` is a simulator. With
    # both idle the router prefers `broken` (ties go by id), so the first jobs land there.
    failing, refusing = fake_upstream(500, "boom"), fake_upstream(400, "context_length_exceeded")
    try:
        qp.start_worker("broken", "--engine", "openai", "--upstream-url", f"http://127.0.0.1:{failing.server_port}/v1",
                        "--models", "shared-model", "--slots", "4")
        qp.start_worker("steady", "--slots", "4", "--sim-tpot-ms", "1", "--models", "shared-model")
        demo = qp.bootstrap(project="breakers", endpoint="ep", model="shared-model", tier="fairshare")
        c = client_for(qp.gateways[0], demo)
        outcomes = []
        for _ in range(10):
            try:
                chat(c, max_tokens=3)
                outcomes.append("ok")
            except openai.APIStatusError as e:
                outcomes.append(e.status_code)
        print("breaker: outcomes", outcomes)
        assert outcomes[:3] == [502, 502, 502], outcomes
        assert outcomes[3:] == ["ok"] * 7, f"after 3 failures the broken worker gets nothing: {outcomes}"
        wait_for(lambda: worker_field(qp, "broken", "breaker") == "open", what="broken's breaker open in its ops record")
        assert worker_field(qp, "steady", "breaker") == "closed"

        # A worker whose every answer is the client's fault (400) stays in.
        qp.start_worker("picky", "--engine", "openai", "--upstream-url", f"http://127.0.0.1:{refusing.server_port}/v1",
                        "--models", "picky-model", "--slots", "2")
        picky = client_for(qp.gateways[0], qp.bootstrap(project="picky", endpoint="ep", model="picky-model", tier="fairshare"))
        for _ in range(6):
            with pytest.raises(openai.BadRequestError) as e:
                chat(picky)
            assert e.value.body["code"] == "context_length_exceeded"
        time.sleep(1.5)   # a heartbeat refreshes the ops record
        assert worker_field(qp, "picky", "breaker") == "closed"
        assert worker_field(qp, "picky", "breaker_trips") == "0"
    finally:
        failing.shutdown()
        refusing.shutdown()
        for w in ("picky", "broken", "steady"):
            if w in qp.procs:
                qp.stop(w)
