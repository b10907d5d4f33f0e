"""A multi-host test bed: Redis, the router, the gateway and three workers each in their own
network namespace with its own address, joined by veth links to one bridge (the test, in the root
namespace, is the client on 10.77.0.1). All traffic stays on that private bridge. Faults under a
load of 64 streams, each printing its counts — completed, errors, lost, hung, duplicated:

- a worker's link cut mid-stream (`ip link set eth0 down` in its namespace);
- a worker SIGTERMed;
- the gateway partitioned from the router (a blackhole route), then healed.

What each fault may cost the client is in docs/failures.md; lost, hung and duplicated must be 0
everywhere. Simulated engine (`sim`): the test is about the platform."""
import subprocess
import time

import openai
import pytest

from chaos import PROMPT, expected_answer, report, storm
from conftest import Platform, client_for, wait_for

NET = "10.77.0"
BRIDGE = "xtbr0"
HOSTS = {"redis": 2, "router": 3, "gw": 4, "w1": 5, "w2": 6, "w3": 7}
CONFIG = """
default_endpoint_tier: standard
tiers:
  - {name: standard, priority: 5, weight: 1, queue_timeout_ms: 20000, request_timeout_ms: 8000}
  - {name: batch, priority: 0, weight: 0, queue_timeout_ms: 86400000, request_timeout_ms: 8000}
"""


def sh(*args, check=True):
    return subprocess.run(args, capture_output=True, text=True, check=check)


def ns(host):
    return f"xt-{host}"


def ip(host):
    return f"{NET}.{HOSTS[host]}"


def teardown_net():
    for h in HOSTS:
        sh("ip", "netns", "del", ns(h), check=False)
        sh("ip", "link", "del", f"xt-{h}-br", check=False)
    sh("ip", "link", "del", BRIDGE, check=False)


@pytest.fixture(scope="module")
def net():
    teardown_net()
    sh("ip", "link", "add", BRIDGE, "type", "bridge")
    sh("ip", "addr", "add", f"{NET}.1/24", "dev", BRIDGE)
    sh("ip", "link", "set", BRIDGE, "up")
    for h in HOSTS:
        sh("ip", "netns", "add", ns(h))
        # The peer gets a unique name (the root namespace may have an eth0), renamed inside.
        sh("ip", "link", "add", f"xt-{h}-br", "type", "veth", "peer", "name", f"xt-{h}-in", "netns", ns(h))
        sh("ip", "-n", ns(h), "link", "set", f"xt-{h}-in", "name", "eth0")
        sh("ip", "link", "set", f"xt-{h}-br", "master", BRIDGE, "up")
        sh("ip", "-n", ns(h), "addr", "add", f"{ip(h)}/24", "dev", "eth0")
        sh("ip", "-n", ns(h), "link", "set", "eth0", "up")
        sh("ip", "-n", ns(h), "link", "set", "lo", "up")
    yield
    teardown_net()


class NetRedis:
    """A redis-server in its own namespace, with a password as on a real network (what Platform
    needs: `url`, `cli`)."""

    PASSWORD = "netbed-secret"

    def __init__(self, tmp):
        self.url = f"redis://:{self.PASSWORD}@{ip('redis')}:6379"
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns("redis"), "redis-server", "--port", "6379", "--bind", ip("redis"),
                                      "--requirepass", self.PASSWORD, "--save", "", "--appendonly", "no", "--dir", str(tmp)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: self.cli("PING") == "PONG", what="redis in its namespace")

    def cli(self, *args):
        return subprocess.run(["redis-cli", "-h", ip("redis"), "-p", "6379", "-a", self.PASSWORD, "--no-auth-warning", "--raw", *args], capture_output=True, text=True, timeout=10).stdout.strip()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


class NetPlatform(Platform):
    """Platform with every process in its host's namespace, reaching the router by its address."""

    HOST_OF = {"router": "router", "gateway-1": "gw"}

    def _spawn(self, name, args):
        host = self.HOST_OF.get(name, name)
        args = [*args, "--router-host", ip("router")]
        if args[0] == "gateway":
            i = args.index("--port")
            args[i + 1] = "8080"
            args += ["--host", ip("gw")]
        log = open(self.log_dir / f"{name}.log", "wb")
        config = [] if args[0] == "worker" else ["--config", str(self.config)]
        import os
        from conftest import BIN
        env = {**os.environ, "XERO_ROUTER_KEY": self.router_key}
        p = subprocess.Popen(["ip", "netns", "exec", ns(host), BIN, *args, *config, "--router-port", str(self.router_port)],
                             stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        self.procs[name] = p
        return p

    def start_gateway(self, name=None, *extra, tls=None):
        self._spawn("gateway-1", ["gateway", "--redis", self.redis.url, "--port", "8080", *extra])
        url = f"http://{ip('gw')}:8080"
        import httpx
        wait_for(lambda: httpx.get(url + "/health", timeout=1).status_code == 200, what="gateway health across the bridge")
        self.gateways.append(url)
        return url


@pytest.fixture(scope="module")
def bed(net, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("netbed")
    (tmp / "redis").mkdir()
    r = NetRedis(tmp / "redis")
    p = NetPlatform(r, tmp, config=CONFIG)
    p.start_router()
    p.start_gateway()
    for w in ("w1", "w2", "w3"):
        p.start_worker(w, "--slots", "32", "--sim-tpot-ms", "20", "--sim-answer-tokens", "100000")
    p.demo = p.bootstrap(project="netbed", endpoint="ep")
    p.expected = expected_answer(p.gateways[0], p.demo)
    yield p
    p.shutdown()
    r.stop()


def test_baseline_across_hosts(bed):
    counts, errors = storm(bed)
    report("netbed no fault", counts, errors)
    assert counts["completed"] == 64


def test_a_worker_link_cut_mid_stream(bed):
    def cut():
        sh("ip", "-n", ns("w1"), "link", "set", "eth0", "down")
    try:
        counts, errors = storm(bed, during=cut)
    finally:
        sh("ip", "-n", ns("w1"), "link", "set", "eth0", "up")
    report("netbed worker link cut", counts, errors)
    # The cut worker's streams end with a visible error (until mid-stream migration, docs/failures.md);
    # no other stream is touched.
    assert all(e in ("worker_lost", 502) for e in errors), errors
    assert counts["completed"] >= 64 - 32
    # It comes back: once the link is up, the worker re-joins and serves again.
    wait_for(lambda: bed.redis.cli("HGET", "xero:worker:w1", "state") == "ready"
             and int(bed.redis.cli("HGET", "xero:worker:w1", "last_heartbeat") or 0) > time.time() * 1000 - 2000,
             timeout=30, what="w1 back")


def test_a_worker_sigterm_under_load(bed):
    counts, errors = storm(bed, during=lambda: bed.procs["w2"].send_signal(15))
    report("netbed worker SIGTERM", counts, errors)
    assert counts["completed"] == 64, "a draining worker finishes what it runs"
    bed.procs["w2"].wait(30)
    bed.procs.pop("w2")
    bed.start_worker("w2", "--slots", "32", "--sim-tpot-ms", "20", "--sim-answer-tokens", "100000")


def test_gateway_partitioned_from_the_router(bed):
    def partition():
        sh("ip", "-n", ns("gw"), "route", "add", "blackhole", f"{ip('router')}/32")
    try:
        counts, errors = storm(bed, during=partition, timeout=30)
    finally:
        sh("ip", "-n", ns("gw"), "route", "del", "blackhole", f"{ip('router')}/32", check=False)
    report("netbed gateway partitioned from the router", counts, errors)
    # Their streams stop mid-way: each ends with the gateway's own timeout (504) — never a hang.
    assert all(e in ("request_timeout", 504, "stream_interrupted", 502) for e in errors), errors
    # Healed: requests work again.
    def works():
        try:
            return client_for(bed.gateways[0], bed.demo, timeout=10).chat.completions.create(
                model="x", messages=PROMPT, max_tokens=3).choices[0].message.content != ""
        except openai.APIError:
            return False
    wait_for(works, timeout=40, what="requests succeeding after the partition heals")
