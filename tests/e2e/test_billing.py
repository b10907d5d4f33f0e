"""Billing you can trust, on real processes: a stream the client abandons is billed for what the
worker generated, a gateway SIGKILLed mid-load has its jobs cancelled and billed by the router,
batch lines are billed at the batch tier's prices (and wait on a limit, never fail for it), and
tier entitlements are enforced. The engine is the simulator (named so): this is about the platform."""
import io
import json
import signal
import subprocess
import threading
import time

import httpx
import pytest

from conftest import BIN, Platform, client_for, wait_for
from test_batches import jsonl, poll

BILLING_CONFIG = """
default_endpoint_tier: standard
project_tiers: [standard, batch]
tiers:
  - {name: priority, priority: 10, weight: 4, queue_timeout_ms: 2000, request_timeout_ms: 30000,
     price_input_per_million: 5.0, price_output_per_million: 20.0}
  - {name: standard, priority: 5, weight: 1, queue_timeout_ms: 2000, request_timeout_ms: 30000,
     price_input_per_million: 2.0, price_output_per_million: 10.0}
  - {name: batch, priority: 0, weight: 0, queue_timeout_ms: 86400000, request_timeout_ms: 30000,
     project_tokens_per_minute: 120, price_input_per_million: 1.0, price_output_per_million: 3.0}
"""


@pytest.fixture(scope="module")
def bill(redis, tmp_path_factory):
    p = Platform(redis, tmp_path_factory.mktemp("billing"), config=BILLING_CONFIG)
    p.start_router("--gateway-timeout-ms", "1500")
    p.start_gateway()
    # 5 ms a token and endless answers: a stream lasts as long as the client reads it.
    p.start_worker("bill-w1", "--slots", "64", "--sim-tpot-ms", "5", "--sim-answer-tokens", "100000")
    p.start_batch_runner()
    p.admin = p.create_admin_key()
    yield p
    p.shutdown()


def project(bill, slug, tier="standard"):
    demo = bill.bootstrap(project=slug, endpoint="chat", model=f"{slug}-model", tier=tier, scopes="inference,management")
    return demo


def usage(bill, demo):
    r = httpx.get(bill.gateways[0] + "/manage/v1/usage", headers={"Authorization": f"Bearer {demo['api_key']}"}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def job_record(bill, request_id):
    return dict(zip(*[iter(bill.redis.cli("HGETALL", f"xero:job:{request_id}").split("\n"))] * 2))


def stream_and_leave(bill, demo, content_chunks, max_tokens=100000, gateway=0):
    """Reads `content_chunks` content deltas of a streamed answer, then drops the connection.
    Returns the request id."""
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True, "max_tokens": max_tokens}
    seen = 0
    with httpx.stream("POST", bill.gateways[gateway] + demo["base_path"] + "/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {demo['api_key']}"}, timeout=30) as resp:
        assert resp.status_code == 200
        request_id = resp.headers["x-request-id"]
        for line in resp.iter_lines():
            if not line.startswith("data: {"):
                continue
            delta = json.loads(line[6:])["choices"][0]["delta"]
            if delta.get("content"):
                seen += 1
                if seen == content_chunks:
                    break
    assert seen == content_chunks
    return request_id


def test_an_abandoned_stream_is_billed_for_what_the_worker_generated(bill):
    demo = project(bill, "abandon")
    request_id = stream_and_leave(bill, demo, 15)
    wait_for(lambda: usage(bill, demo)["total"].get("requests") == 1, timeout=10, what="the abandoned stream settled")
    u = usage(bill, demo)["endpoints"]["chat"]
    job = job_record(bill, request_id)
    assert job["state"] == "cancelled", job
    # The prompt once ("hi": 7 simulated tokens), and every token the worker generated before the
    # cancel reached it: at least what the client read, exactly what the worker reported.
    assert u["input_tokens"] == 7
    assert u["output_tokens"] >= 15
    assert u["output_tokens"] == int(job["completion_tokens"])
    assert u["cost_micro_usd"] == round(7 * 2.0 + u["output_tokens"] * 10.0)


def test_reading_all_but_the_last_chunk_is_not_free(bill):
    demo = project(bill, "lastchunk")
    # 20 content deltas, then leave before the finish chunk, the usage chunk and [DONE].
    stream_and_leave(bill, demo, 20, max_tokens=20)
    wait_for(lambda: usage(bill, demo)["total"].get("requests") == 1, timeout=10, what="settled")
    u = usage(bill, demo)["endpoints"]["chat"]
    assert u["input_tokens"] == 7 and u["output_tokens"] == 20


def test_a_killed_gateways_jobs_are_cancelled_and_billed_by_the_router(bill):
    demo = project(bill, "killed")
    doomed = bill.start_gateway("doomed-gateway")
    errors, finished = [], []
    streaming = threading.Barrier(25, timeout=30)

    def one(i):
        first = True
        try:
            c = client_for(doomed, demo, timeout=30)
            for _ in c.chat.completions.create(model="m", messages=[{"role": "user", "content": f"load {i}"}], stream=True,
                                               max_tokens=1200):
                if first:
                    first = False
                    streaming.wait()
            finished.append(i)
        except Exception as e:  # the gateway dies under it
            errors.append(e)
        finally:
            if first:
                streaming.abort()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    # Every stream running (24 on 64 slots; each client has its first chunk: `xero:tier:*` is
    # shared with the session's other deployments), a few hundred ms into its 6 s answer: the
    # router notices the silence (1.5 s) long before any stream could finish.
    streaming.wait()
    time.sleep(0.4)
    bill.procs.pop("doomed-gateway").send_signal(signal.SIGKILL)
    for t in threads:
        t.join(30)
    assert len(errors) == 24, f"{len(finished)} streams finished although their gateway was killed"
    wait_for(lambda: "gateway gone" in bill.log("router"), timeout=10, what="the router noticed the gateway is gone")

    def records():
        out = []
        for k in bill.redis.cli("--scan", "--pattern", "xero:job:*").split("\n"):
            if not k:
                continue
            rec = dict(zip(*[iter(bill.redis.cli("HGETALL", k).split("\n"))] * 2))
            if rec.get("project") == demo["project_id"]:
                out.append(rec)
        return out

    wait_for(lambda: len(records()) == 24 and all(r.get("state") in ("cancelled", "done") for r in records()), timeout=15,
             what="every job of the dead gateway ended")
    recs = records()
    assert sum(1 for r in recs if r["state"] == "cancelled") > 0, "the router cancelled the dead gateway's streams"
    expected_in = sum(int(r["prompt_tokens"]) for r in recs)
    expected_out = sum(int(r["completion_tokens"]) for r in recs)
    wait_for(lambda: usage(bill, demo)["total"].get("requests") == 24, timeout=10, what="every job settled")
    u = usage(bill, demo)["total"]
    # The router settles from the workers' reports, so no settlement was queued in the dead
    # gateway: the documented shortfall bound for a killed gateway is zero.
    shortfall = (expected_in - u["input_tokens"], expected_out - u["output_tokens"])
    print(f"killed gateway: {len(recs)} jobs, usage {u['input_tokens']} in / {u['output_tokens']} out, shortfall {shortfall}")
    assert shortfall == (0, 0)
    assert expected_out > 24, "the streams had generated tokens before the kill"


def test_batch_lines_are_billed_at_batch_prices_and_wait_on_limits(bill):
    demo = project(bill, "batches")
    c = client_for(bill.gateways[0], demo)
    # 10 lines reserve about 210 tokens against a project limit of 120 a minute: some must wait
    # for the bucket to refill (settlement refunds what a line did not use), none may fail.
    f = c.files.create(file=("in.jsonl", io.BytesIO(jsonl(10, max_tokens=4))), purpose="batch")
    b = poll(c, c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h").id, timeout=120)
    assert b.status == "completed" and b.request_counts.completed == 10 and b.request_counts.failed == 0, b
    assert "batch line waits on a rate limit" in bill.log("batch-runner")
    lines = [json.loads(l) for l in c.files.content(b.output_file_id).text.splitlines() if l]
    line_in = sum(o["response"]["body"]["usage"]["prompt_tokens"] for o in lines)
    line_out = sum(o["response"]["body"]["usage"]["completion_tokens"] for o in lines)
    assert line_out == 40
    wait_for(lambda: usage(bill, demo)["total"].get("requests") == 10, timeout=10, what="batch lines settled")
    u = usage(bill, demo)["endpoints"]["chat"]
    assert (u["input_tokens"], u["output_tokens"]) == (line_in, line_out)
    assert u["cost_micro_usd"] == round(line_in * 1.0 + line_out * 3.0), "batch tier prices, not the endpoint's standard ones"
    b = c.batches.retrieve(b.id)
    assert b.usage.input_tokens == line_in and b.usage.output_tokens == line_out and b.usage.total_tokens == line_in + line_out


def mgmt(bill, key, method, path, body=None):
    return httpx.request(method, bill.gateways[0] + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=10)


def test_tier_entitlements(bill):
    demo = project(bill, "entitled")
    key = demo["api_key"]
    # Not entitled to priority by the config (project_tiers: standard, batch).
    r = mgmt(bill, key, "POST", "/manage/v1/endpoints", {"slug": "fast", "model": "m", "tier": "priority"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "tier_not_allowed", r.text
    # Entitled to the weight-0 batch tier: it may create an endpoint on it itself.
    r = mgmt(bill, key, "POST", "/manage/v1/endpoints", {"slug": "offline", "model": "m", "tier": "batch"})
    assert r.status_code == 200, r.text
    # An existing slug is a conflict, not a silent overwrite.
    r = mgmt(bill, key, "POST", "/manage/v1/endpoints", {"slug": "chat", "model": "other", "tier": "standard"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "endpoint_exists"
    assert mgmt(bill, key, "GET", "/manage/v1/endpoints").json()["data"][0]["model"] == "entitled-model"
    # The update route checks entitlements again.
    r = mgmt(bill, key, "PATCH", "/manage/v1/endpoints/chat", {"tier": "priority"})
    assert r.status_code == 403
    # Only the admin grants; then the project may use the tier.
    r = mgmt(bill, key, "PUT", f"/manage/v1/projects/{demo['project_id']}/tiers/priority")
    assert r.status_code in (401, 403)
    env = {"XEROCTL_BASE_URL": bill.gateways[0], "XEROCTL_KEY": bill.admin, "PATH": "/usr/bin:/bin"}
    xeroctl = str(__import__("pathlib").Path(BIN).parent / "xeroctl")
    out = subprocess.run([xeroctl, "tiers", "grant", "entitled", "priority"], capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode == 0 and "priority" in out.stdout.split(), out.stderr
    r = mgmt(bill, key, "PATCH", "/manage/v1/endpoints/chat", {"tier": "priority"})
    assert r.status_code == 200 and r.json()["tier"] == "priority", r.text
    chat = client_for(bill.gateways[0], demo).chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert chat.choices[0].message.content
    # Withdrawn: no new endpoint on it.
    out = subprocess.run([xeroctl, "tiers", "withdraw", "entitled", "priority"], capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode == 0 and "priority" not in out.stdout.split()
    r = mgmt(bill, key, "POST", "/manage/v1/endpoints", {"slug": "fast2", "model": "m", "tier": "priority"})
    assert r.status_code == 403
    r = mgmt(bill, bill.admin, "GET", f"/manage/v1/projects/entitled/tiers")
    assert r.status_code == 200 and r.json()["tiers"] == ["standard", "batch"]


def test_entitlement_and_update_routes_refuse_bad_input(bill):
    demo = project(bill, "badinput")
    key = demo["api_key"]
    r = mgmt(bill, key, "PATCH", "/manage/v1/endpoints/chat", {"tier": 5})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_type" and r.json()["error"]["param"] == "tier"
    r = mgmt(bill, key, "PATCH", "/manage/v1/endpoints/chat", {"model": ""})
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"
    r = mgmt(bill, key, "PATCH", "/manage/v1/endpoints/chat", {"fleet": "everyone"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_value"
    r = mgmt(bill, key, "PATCH", "/manage/v1/endpoints/nope", {"tier": "standard"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "endpoint_not_found"
    r = mgmt(bill, key, "PATCH", "/manage/v1/endpoints/chat", {"tier": "gold"})
    assert r.status_code == 400 and "Unknown tier" in r.json()["error"]["message"]
    r = mgmt(bill, bill.admin, "PUT", f"/manage/v1/projects/{demo['project_id']}/tiers/gold")
    assert r.status_code == 404 and r.json()["error"]["code"] == "tier_not_found"
    r = mgmt(bill, bill.admin, "PUT", "/manage/v1/projects/no-such-project/tiers/priority")
    assert r.status_code == 404 and r.json()["error"]["code"] == "project_not_found"
    # Nothing changed through all of that.
    assert mgmt(bill, key, "GET", "/manage/v1/endpoints").json()["data"][0]["tier"] == "standard"
