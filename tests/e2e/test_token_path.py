"""The token path fails visibly: a client that stops reading makes its own request's mailbox reach
its bound, and that request — only that one — ends with a `stream_interrupted` error event after the
tokens it already had; its job is cancelled on the worker. No token is dropped silently: what the
client did receive is an unbroken prefix of the answer."""
import json
import threading
import time

import httpx
import pytest

from conftest import Platform, wait_for


@pytest.fixture(scope="module")
def tp(redis, tmp_path_factory):
    p = Platform(redis, tmp_path_factory.mktemp("tokenpath"))
    p.start_router()
    # Large enough that a reading client never fills it (the other request), small enough that a
    # stalled one does within seconds once its socket buffers are full.
    p.start_gateway(None, "--max-buffered-events", "5000")
    p.start_worker("tp-w1", "--sim-tpot-ms", "0", "--slots", "8", "--sim-answer-tokens", "400000")
    p.demo = p.bootstrap(project="tokenpath")
    yield p
    p.shutdown()


def sse_events(lines):
    for line in lines:
        if line.startswith("data: "):
            yield line[6:]


def test_a_client_that_stops_reading_gets_an_error_and_nobody_else_is_affected(tp):
    url = tp.gateways[0] + tp.demo["base_path"] + "/chat/completions"
    headers = {"Authorization": f"Bearer {tp.demo['api_key']}"}
    other = {}

    def well_behaved():
        with httpx.stream("POST", url, headers=headers, timeout=60,
                          json={"model": "m", "stream": True, "max_tokens": 300, "messages": [{"role": "user", "content": "other"}]}) as r:
            other["events"] = list(sse_events(r.iter_lines()))

    with httpx.stream("POST", url, headers=headers, timeout=120,
                      json={"model": "m", "stream": True, "max_tokens": 400000, "messages": [{"role": "user", "content": "slow reader"}]}) as r:
        assert r.status_code == 200
        request_id = r.headers["x-request-id"]
        time.sleep(4)   # read nothing: the socket buffers fill, then the gateway's mailbox passes its bound
        t = threading.Thread(target=well_behaved)
        t.start()
        t.join(60)
        events = list(sse_events(r.iter_lines()))

    assert events, "the slow reader got nothing"
    assert events[-1] != "[DONE]", "the answer cannot have completed: 400,000 tokens"
    last = json.loads(events[-1])
    assert last["error"]["code"] == "stream_interrupted", last
    # What arrived before the error is an unbroken prefix of the simulator's answer (no hole).
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1]
                   if e.startswith("{") and json.loads(e).get("choices"))
    assert text.startswith("You said: slow reader"), text[:80]
    # The worker was told to stop: the job ends cancelled, well before 400,000 tokens.
    wait_for(lambda: tp.redis.cli("HGET", f"xero:job:{request_id}", "state") in ("cancelled", "done"), timeout=20, what="job ended")
    assert tp.redis.cli("HGET", f"xero:job:{request_id}", "state") == "cancelled"
    # The other request was not affected.
    assert other["events"][-1] == "[DONE]", other["events"][-3:]
    assert all(p.poll() is None for p in tp.procs.values())
