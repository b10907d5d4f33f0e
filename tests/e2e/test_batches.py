"""Files and Batches through the OpenAI SDK against real processes, including a crash test."""
import io
import json
import signal
import time

import httpx
import openai
import pytest

from conftest import client_for, wait_for


def jsonl(n, prefix="req", max_tokens=4, **extra):
    lines = []
    for i in range(n):
        lines.append(json.dumps({"custom_id": f"{prefix}-{i}", "method": "POST", "url": "/v1/chat/completions",
                                 "body": {"model": "m", "max_tokens": max_tokens, "messages": [{"role": "user", "content": f"line {i}"}], **extra}}))
    return ("\n".join(lines) + "\n").encode()


def poll(client, batch_id, until=("completed", "failed", "cancelled", "expired"), timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        b = client.batches.retrieve(batch_id)
        if b.status in until:
            return b
        time.sleep(0.2)
    raise TimeoutError(f"batch {batch_id} still {b.status}")


@pytest.fixture
def bp(fresh_platform):
    p = fresh_platform
    p.start_router()
    p.start_gateway()
    p.start_worker("bw1", "--slots", "16")
    p.start_batch_runner()
    p.demo = p.bootstrap()
    p.client = client_for(p.gateways[0], p.demo)
    return p


def outputs(client, file_id):
    return [json.loads(l) for l in client.files.content(file_id).text.splitlines() if l]


def test_upload_create_poll_download(bp):
    c = bp.client
    f = c.files.create(file=("input.jsonl", io.BytesIO(jsonl(50))), purpose="batch")
    assert f.object == "file" and f.purpose == "batch" and f.bytes > 0 and f.filename == "input.jsonl"
    assert c.files.retrieve(f.id).id == f.id
    assert f.id in [x.id for x in c.files.list().data]
    b = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h", metadata={"team": "qa"})
    assert b.status == "validating" and b.metadata == {"team": "qa"} and b.request_counts.total == 0
    b = poll(c, b.id)
    assert b.status == "completed", b
    assert b.request_counts.total == 50 and b.request_counts.completed == 50 and b.request_counts.failed == 0
    assert b.in_progress_at and b.completed_at and b.finalizing_at and b.error_file_id is None
    out = outputs(c, b.output_file_id)
    assert sorted(o["custom_id"] for o in out) == sorted(f"req-{i}" for i in range(50))
    for o in out:
        assert o["response"]["status_code"] == 200 and o["error"] is None
        i = o["custom_id"].split("-")[1]
        assert o["response"]["body"]["choices"][0]["message"]["content"].startswith(f"You said: line {i}")
        assert o["response"]["body"]["usage"]["completion_tokens"] == 4
    assert b.id in [x.id for x in c.batches.list().data]
    # Deleting a file
    assert c.files.delete(f.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        c.files.retrieve(f.id)


def test_text_completion_lines(bp):
    """`/v1/completions` lines: string and token-id prompts, n per prompt, each answered as the
    interactive route answers it, billed to the batch."""
    c = bp.client
    lines = [{"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": {"model": "m", "prompt": "Once upon a time", "max_tokens": 3}},
             {"custom_id": "b", "method": "POST", "url": "/v1/completions", "body": {"model": "m", "prompt": ["x", "y"], "n": 2, "max_tokens": 2}},
             {"custom_id": "c", "method": "POST", "url": "/v1/completions", "body": {"model": "m", "prompt": [1, 2, 3]}}]
    f = c.files.create(file=("c.jsonl", io.BytesIO(("\n".join(json.dumps(l) for l in lines) + "\n").encode())), purpose="batch")
    b = poll(c, c.batches.create(input_file_id=f.id, endpoint="/v1/completions", completion_window="24h").id)
    assert b.status == "completed" and b.request_counts.completed == 3, b
    out = {o["custom_id"]: o["response"] for o in outputs(c, b.output_file_id)}
    assert all(r["status_code"] == 200 and r["body"]["object"] == "text_completion" for r in out.values()), out
    assert out["a"]["body"]["usage"]["completion_tokens"] <= 3 and out["a"]["body"]["choices"][0]["text"]
    assert [ch["index"] for ch in out["b"]["body"]["choices"]] == [0, 1, 2, 3]
    assert out["c"]["body"]["usage"]["completion_tokens"] <= 16    # OpenAI's default for completions
    assert b.usage.total_tokens > 0
    # A chat body on a completions batch is a bad line: the batch fails before any work.
    bad = dict(lines[0], url="/v1/chat/completions")
    f = c.files.create(file=("bad.jsonl", io.BytesIO((json.dumps(bad) + "\n").encode())), purpose="batch")
    b = poll(c, c.batches.create(input_file_id=f.id, endpoint="/v1/completions", completion_window="24h").id)
    assert b.status == "failed" and b.request_counts.completed == 0


def test_malformed_file_and_bad_lines_fail_the_batch_before_any_work(bp):
    c = bp.client
    bad = c.files.create(file=("bad.jsonl", io.BytesIO(b"this is not json\n{\"also\": \"bad\"\n")), purpose="batch")
    b = poll(c, c.batches.create(input_file_id=bad.id, endpoint="/v1/chat/completions", completion_window="24h").id)
    assert b.status == "failed" and b.failed_at
    assert [e.line for e in b.errors.data] == [1, 2]
    good_then_bad = jsonl(3) + json.dumps({"custom_id": "req-0", "method": "POST", "url": "/v1/chat/completions",
                                           "body": {"model": "m", "messages": []}}).encode() + b"\n"
    f = c.files.create(file=("mixed.jsonl", io.BytesIO(good_then_bad)), purpose="batch")
    b = poll(c, c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h").id)
    assert b.status == "failed"
    assert b.errors.data[0].line == 4 and b.errors.data[0].code == "duplicate_custom_id"
    assert b.request_counts.completed == 0 and b.output_file_id is None
    # Request-level validation of the batch call itself.
    with pytest.raises(openai.BadRequestError):
        c.batches.create(input_file_id=f.id, endpoint="/v1/moderations", completion_window="24h")
    with pytest.raises(openai.BadRequestError):
        c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="1h")
    with pytest.raises(openai.NotFoundError):
        c.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(openai.BadRequestError):
        c.files.create(file=("x.jsonl", io.BytesIO(jsonl(1))), purpose="fine-tune")


def test_other_projects_key_sees_no_files_or_batches(bp):
    c = bp.client
    f = c.files.create(file=("input.jsonl", io.BytesIO(jsonl(2))), purpose="batch")
    b = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    other = bp.bootstrap(project="intruders", endpoint="ep", model="m")
    oc = client_for(bp.gateways[0], other)
    for call in (lambda: oc.files.retrieve(f.id), lambda: oc.files.content(f.id), lambda: oc.batches.retrieve(b.id),
                 lambda: oc.batches.cancel(b.id), lambda: oc.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")):
        with pytest.raises(openai.NotFoundError):
            call()
    assert f.id not in [x.id for x in oc.files.list().data]
    assert b.id not in [x.id for x in oc.batches.list().data]
    # The other key on this project's URL is refused outright.
    with pytest.raises(openai.PermissionDeniedError):
        client_for(bp.gateways[0], {**bp.demo, "api_key": other["api_key"]}).files.list()


def test_cancel_midway_writes_partial_output(fresh_platform):
    p = fresh_platform
    p.start_router()
    p.start_gateway()
    p.start_worker("slow", "--slots", "4", "--sim-tpot-ms", "10", "--sim-answer-tokens", "1000")
    p.start_batch_runner("batch-runner", "--max-in-flight", "4")
    demo = p.bootstrap()
    c = client_for(p.gateways[0], demo)
    f = c.files.create(file=("input.jsonl", io.BytesIO(jsonl(200, max_tokens=20))), purpose="batch")
    b = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    wait_for(lambda: c.batches.retrieve(b.id).request_counts.completed >= 8, timeout=30, what="some lines done")
    cancelled = c.batches.cancel(b.id)
    assert cancelled.status == "cancelling" and cancelled.cancelling_at
    b = poll(c, b.id)
    assert b.status == "cancelled" and b.cancelled_at
    done = outputs(c, b.output_file_id)
    errs = outputs(c, b.error_file_id)
    assert 8 <= len(done) < 200
    assert len(done) + len(errs) == 200
    assert {o["custom_id"] for o in done}.isdisjoint({o["custom_id"] for o in errs})
    assert all(e["error"]["code"] == "batch_cancelled" for e in errs)
    with pytest.raises(openai.APIStatusError):
        c.batches.cancel(b.id)   # already final


def test_list_paging(bp):
    c = bp.client
    f = c.files.create(file=("input.jsonl", io.BytesIO(jsonl(1))), purpose="batch")
    ids = [c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h").id for _ in range(5)]
    page1 = c.batches.list(limit=2)
    assert [b.id for b in page1.data] == ids[::-1][:2] and page1.has_more
    page2 = c.batches.list(limit=2, after=page1.data[-1].id)
    assert [b.id for b in page2.data] == ids[::-1][2:4]
    assert [b.id for b in c.batches.list(limit=100).data][:5] == ids[::-1]


def test_crash_of_worker_and_runner_loses_and_duplicates_nothing(fresh_platform):
    p = fresh_platform
    p.start_router("--worker-timeout-ms", "1000")
    p.start_gateway()
    # ~60 ms a line, 16 in flight: the batch takes seconds, so the crash lands mid-way.
    p.start_worker("cw1", "--slots", "8", "--sim-tpot-ms", "10")
    p.start_worker("cw2", "--slots", "8", "--sim-tpot-ms", "10")
    p.start_batch_runner("runner-1", "--max-in-flight", "16")
    demo = p.bootstrap()
    c = client_for(p.gateways[0], demo)
    f = c.files.create(file=("input.jsonl", io.BytesIO(jsonl(1000, max_tokens=6))), purpose="batch")
    b = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    wait_for(lambda: c.batches.retrieve(b.id).request_counts.completed >= 150, timeout=60, what="progress")
    p.stop("runner-1", signal.SIGKILL)
    p.stop("cw1", signal.SIGKILL)
    assert c.batches.retrieve(b.id).request_counts.completed < 1000, "the crash must land mid-way"
    time.sleep(1.5)
    p.start_worker("cw3", "--slots", "8", "--sim-tpot-ms", "10")
    p.start_batch_runner("runner-2", "--max-in-flight", "16")
    b = poll(c, b.id, timeout=180)
    assert b.status == "completed", b
    assert b.request_counts.completed == 1000 and b.request_counts.failed == 0
    out = outputs(c, b.output_file_id)
    ids = [o["custom_id"] for o in out]
    assert len(ids) == 1000 and len(set(ids)) == 1000, "every custom_id exactly once"
    assert all(o["response"]["status_code"] == 200 for o in out)
    # The standby took over. (Whether it found lines in flight to requeue depends on the instant of
    # the kill — a claimed line is recorded in flight only between its claim and its answer — so
    # "batch resumed after restart" is not asserted; exactly-once above is what matters.)
    assert "batch runner leads" in p.log("runner-2")


def test_xeroctl_batch_commands(bp, tmp_path):
    import os
    import subprocess
    from conftest import BIN
    from pathlib import Path
    xeroctl = str(Path(BIN).parent / "xeroctl")
    keyed = bp.bootstrap(scopes="inference,management")
    env = {**os.environ, "XEROCTL_BASE_URL": bp.gateways[0], "XEROCTL_KEY": keyed["api_key"]}
    src = tmp_path / "in.jsonl"
    src.write_bytes(jsonl(30, prefix="cli"))
    out = subprocess.run([xeroctl, "batch", "submit", str(src), "--endpoint", "my-endpoint", "--watch"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "100%" in out.stderr and "30/30 done" in out.stderr and "req/s" in out.stderr   # the progress bar
    batch_id = out.stdout.splitlines()[1].split()[0]
    assert batch_id.startswith("batch_") and "completed" in out.stdout
    res = subprocess.run([xeroctl, "batch", "results", batch_id, "--endpoint", "my-endpoint"], capture_output=True, text=True, env=env, timeout=30)
    ids = sorted(json.loads(l)["custom_id"] for l in res.stdout.splitlines())
    assert ids == sorted(f"cli-{i}" for i in range(30))
    lst = subprocess.run([xeroctl, "batch", "list", "--endpoint", "my-endpoint", "--json"], capture_output=True, text=True, env=env, timeout=30)
    assert batch_id in lst.stdout
    st = subprocess.run([xeroctl, "batch", "status", batch_id, "--endpoint", "my-endpoint"], capture_output=True, text=True, env=env, timeout=30)
    assert "completed" in st.stdout and "30" in st.stdout
    bad = subprocess.run([xeroctl, "batch", "cancel", batch_id, "--endpoint", "my-endpoint"], capture_output=True, text=True, env=env, timeout=30)
    assert bad.returncode != 0 and "cannot be cancelled" in bad.stderr
    missing = subprocess.run([xeroctl, "batch", "submit", str(tmp_path / "nope.jsonl"), "--endpoint", "my-endpoint"], capture_output=True, text=True, env=env)
    assert missing.returncode != 0 and "cannot read" in missing.stderr


def test_expired_batch_ends_with_partial_results(fresh_platform):
    p = fresh_platform
    p.start_router()
    p.start_gateway()
    p.start_worker("ew", "--slots", "2", "--sim-tpot-ms", "10", "--sim-answer-tokens", "1000")
    p.start_batch_runner("batch-runner", "--max-in-flight", "2")
    demo = p.bootstrap()
    c = client_for(p.gateways[0], demo)
    f = c.files.create(file=("input.jsonl", io.BytesIO(jsonl(100, max_tokens=20))), purpose="batch")
    b = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    wait_for(lambda: c.batches.retrieve(b.id).request_counts.completed >= 4, timeout=30, what="progress")
    # An operator's view of time passing: the completion window ends now.
    p.redis.cli("HSET", f"xero:batch:{b.id}", "expires_at", str(int(time.time()) - 1))
    b = poll(c, b.id)
    assert b.status == "expired" and b.expired_at
    done, errs = outputs(c, b.output_file_id), outputs(c, b.error_file_id)
    assert len(done) + len(errs) == 100 and len(done) >= 4
    assert {e["error"]["code"] for e in errs} == {"batch_expired"}


def test_file_limits_are_enforced(bp):
    c = bp.client
    too_many = b"".join(b'{"custom_id":"%d"}\n' % i for i in range(50_001))
    with pytest.raises(openai.BadRequestError) as e:
        c.files.create(file=("big.jsonl", io.BytesIO(too_many)), purpose="batch")
    assert e.value.body["code"] == "too_many_lines"
    r = httpx.post(bp.gateways[0] + bp.demo["base_path"] + "/files", headers={"Authorization": f"Bearer {bp.demo['api_key']}"},
                   content=b"not multipart", timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "file"


def test_standby_runner_takes_over(fresh_platform):
    p = fresh_platform
    p.start_router()
    p.start_gateway()
    p.start_worker("sw", "--slots", "8", "--sim-tpot-ms", "10")
    p.start_batch_runner("leader", "--max-in-flight", "8")
    time.sleep(1)
    p.start_batch_runner("standby", "--max-in-flight", "8")
    demo = p.bootstrap()
    c = client_for(p.gateways[0], demo)
    f = c.files.create(file=("input.jsonl", io.BytesIO(jsonl(300, max_tokens=6))), purpose="batch")
    b = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    wait_for(lambda: c.batches.retrieve(b.id).request_counts.completed >= 30, timeout=30, what="progress")
    assert "batch runner leads" in p.log("leader") and "batch runner leads" not in p.log("standby")
    p.stop("leader", signal.SIGKILL)
    b = poll(c, b.id, timeout=120)
    assert b.status == "completed" and b.request_counts.completed == 300
    ids = [o["custom_id"] for o in outputs(c, b.output_file_id)]
    assert len(ids) == 300 == len(set(ids))
    assert "batch runner leads" in p.log("standby")
