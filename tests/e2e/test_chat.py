"""The seed's requests through the whole path: OpenAI SDK → gateway → router → worker (simulator) → SSE."""
import json
import subprocess
import threading
import time

import httpx
import pytest
from openai import OpenAI

from conftest import client_for, tier_records

SPEC_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]


def test_spec_python_example_non_streaming(client):
    response = client.chat.completions.create(model="deepseek-r1-distill-llama-70b", messages=SPEC_MESSAGES, max_tokens=100)
    assert response.object == "chat.completion"
    assert response.id.startswith("chatcmpl-")
    assert response.model == "demo-model", "the endpoint's model answers, whatever the client names"
    choice = response.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content.startswith("You said: What is the capital of France?.")
    assert choice.finish_reason == "stop"
    assert response.usage.completion_tokens == 16
    assert response.usage.prompt_tokens > 0
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


def test_spec_streaming_example_matches_non_streaming(client):
    kwargs = dict(model="deepseek-r1-distill-llama-70b", messages=SPEC_MESSAGES, seed=11)
    full = client.chat.completions.create(**kwargs).choices[0].message.content
    stream = client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 16
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)


def test_max_tokens_stop_n_seed(client):
    r = client.chat.completions.create(model="x", messages=[{"role": "user", "content": "one two three four"}], max_tokens=4)
    assert r.choices[0].message.content == "You said: one two"
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 4
    r = client.chat.completions.create(model="x", messages=[{"role": "user", "content": "one two three four"}], stop=["three"])
    assert r.choices[0].message.content == "You said: one two "
    assert r.choices[0].finish_reason == "stop"
    r = client.chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}], n=3, seed=5)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert len({c.message.content for c in r.choices}) == 3
    again = client.chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}], n=3, seed=5)
    assert [c.message.content for c in again.choices] == [c.message.content for c in r.choices]


def test_streaming_n_choices_each_get_role_and_finish(client):
    chunks = list(client.chat.completions.create(model="x", messages=[{"role": "user", "content": "hey"}], n=2, max_tokens=3, stream=True))
    for i in (0, 1):
        mine = [c.choices[0] for c in chunks if c.choices and c.choices[0].index == i]
        assert mine[0].delta.role == "assistant"
        assert [m.finish_reason for m in mine if m.finish_reason] == ["length"]


def test_spec_curl_examples(platform):
    base = platform.gateways[0] + platform.demo["base_path"]
    key = platform.demo["api_key"]
    body = json.dumps({"model": "deepseek-r1-distill-llama-70b", "messages": SPEC_MESSAGES, "max_tokens": 100})
    out = subprocess.run(["curl", "-sS", f"{base}/chat/completions", "-H", f"Authorization: Bearer {key}",
                          "-H", "Content-Type: application/json", "-d", body], capture_output=True, text=True, timeout=30)
    data = json.loads(out.stdout)
    assert data["choices"][0]["message"]["content"].startswith("You said: What is the capital of France?")
    stream_body = json.dumps({"model": "deepseek-r1-distill-llama-70b",
                              "messages": [{"role": "user", "content": "What is the capital of France?"}], "stream": True})
    out = subprocess.run(["curl", "-sSN", f"{base}/chat/completions", "-H", f"Authorization: Bearer {key}",
                          "-H", "Content-Type: application/json", "-d", stream_body], capture_output=True, text=True, timeout=30)
    events = [e for e in out.stdout.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    text = "".join(json.loads(e[6:])["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert text.startswith("You said: What is the capital of France?")


def test_models_listing(client, platform):
    models = client.models.list()
    assert [m.id for m in models.data] == ["demo-model"]
    assert client.models.retrieve("demo-model").id == "demo-model"
    with pytest.raises(Exception) as e:
        client.models.retrieve("other")
    assert getattr(e.value, "status_code", None) == 404


def test_one_hundred_concurrent_streams(platform):
    client = client_for(platform.gateways[0], platform.demo, http_client=None)
    results, errors = {}, []

    def run(i):
        try:
            stream = client.chat.completions.create(model="x", messages=[{"role": "user", "content": f"stream number {i} please"}],
                                                    stream=True, max_tokens=12)
            results[i] = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(repr(e))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert len(results) == 100
    for i, text in results.items():
        assert text.startswith(f"You said: stream number {i} please"), (i, text)


def test_ops_view_in_redis(client, platform):
    r = client.chat.completions.create(model="x", messages=[{"role": "user", "content": "ops"}], max_tokens=2)
    redis = platform.redis
    key = f"xero:job:{r.id}"
    deadline = time.time() + 5
    while time.time() < deadline and redis.cli("HGET", key, "state") != "done":
        time.sleep(0.05)
    job = dict(zip(*[iter(redis.cli("HGETALL", key).split("\n"))] * 2))
    assert job["state"] == "done"
    assert job["tier"] == "standard"
    assert job["worker"] in ("w-shared-1", "w-shared-2")
    assert int(job["dispatched_at"]) >= int(job["queued_at"]) >= int(job["accepted_at"])
    assert int(job["finished_at"]) >= int(job["dispatched_at"])
    assert job["completion_tokens"] == "2"
    assert 0 < int(redis.cli("TTL", key)) <= 3600
    workers = redis.cli("ZRANGE", "xero:workers", "0", "-1").split("\n")
    assert {"w-shared-1", "w-shared-2"} <= set(workers)
    w = dict(zip(*[iter(redis.cli("HGETALL", "xero:worker:w-shared-1").split("\n"))] * 2))
    assert w["slots"] == "64" and w["engine"] == "sim" and w["state"] == "ready"
    # One record per router (the session's Redis holds every test's routers; a gone router's record
    # may expire between the scan and the read: those come back empty, or with TTL -2).
    tiers = [t for t in tier_records(redis, "standard") if t]
    assert sum(int(t["dispatched_total"]) for t in tiers) >= 1 and all("depth" in t and "inflight" in t for t in tiers)
    ttls = [int(redis.cli("TTL", k)) for k in redis.cli("--scan", "--pattern", "xero:tier:standard:*").split()]
    assert ttls and all(t == -2 or 0 <= t <= 30 for t in ttls), ttls   # 0: under a second left


def test_client_disconnect_cancels_the_job(platform):
    base = platform.gateways[0] + platform.demo["base_path"]
    headers = {"Authorization": f"Bearer {platform.demo['api_key']}"}
    body = {"model": "x", "messages": [{"role": "user", "content": "long"}], "stream": True, "max_tokens": 100000}
    # The shared workers make a token every 2 ms; 100k tokens would take minutes.
    request_id = None
    with httpx.stream("POST", base + "/chat/completions", json=body, headers=headers, timeout=30) as resp:
        request_id = resp.headers["x-request-id"]
        for i, _ in enumerate(resp.iter_lines()):
            if i > 5:
                break
    deadline = time.time() + 10
    state = None
    while time.time() < deadline:
        state = platform.redis.cli("HGET", f"xero:job:{request_id}", "state")
        if state == "cancelled":
            break
        time.sleep(0.1)
    assert state == "cancelled"


TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                           "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}]


def test_tool_calling_through_the_whole_path(client):
    r = client.chat.completions.create(model="x", messages=[{"role": "user", "content": "weather in Paris?"}], tools=TOOLS)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    assert json.loads(call.function.arguments) == {"query": "weather in Paris?"}
    assert choice.message.content is None
    chunks = list(client.chat.completions.create(model="x", messages=[{"role": "user", "content": "weather in Paris?"}], tools=TOOLS,
                                                 stream=True))
    deltas = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert deltas[0].id and deltas[0].function.name == "get_weather"
    assert json.loads("".join(d.function.arguments for d in deltas)) == {"query": "weather in Paris?"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    # tool_choice none: a normal answer.
    plain = client.chat.completions.create(model="x", messages=[{"role": "user", "content": "no tools"}], tools=TOOLS, tool_choice="none")
    assert plain.choices[0].message.tool_calls is None and plain.choices[0].message.content.startswith("You said: no tools")
