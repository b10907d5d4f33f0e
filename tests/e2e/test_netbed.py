"""A multi-host test bed: Redis (primary, replica, three Sentinels), two routers, two gateways and
three workers, each host in its own network namespace with its own address, joined by veth links
to one bridge (the test, in the root namespace, is the client on 10.77.0.1). All traffic stays on
that private bridge. The platform reaches Redis through Sentinel (`redis+sentinel://`) and every
process connects to both routers. Faults under a load of 64 streams, each printing its counts —
completed, errors, lost, hung, duplicated:

- a worker's link cut mid-stream (`ip link set eth0 down` in its namespace);
- a worker SIGTERMed;
- a router SIGKILLed;
- a gateway partitioned from one router (a blackhole route), then healed;
- the Redis primary SIGKILLed (Sentinel promotes the replica).

What each fault may cost the client is in docs/failures.md; lost, hung and duplicated must be 0
everywhere. Simulated engine (`sim`): the test is about the platform."""
import subprocess
import time

import openai
import pytest

from chaos import PROMPT, expected_answer, jobs_of, logged, report, storm
from conftest import Platform, client_for, wait_for

NET = "10.77.0"
BRIDGE = "xtbr0"
HOSTS = {"redis": 2, "router": 3, "gw": 4, "w1": 5, "w2": 6, "w3": 7, "router2": 8, "gw2": 9, "redis2": 10, "sentinel": 11}
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
    """Redis as a real deployment runs it, across hosts: a primary (host `redis`), a replica
    (`redis2`) and three Sentinels (on `redis`, `redis2` and `sentinel`), with a password on the data
    nodes. What Platform needs: `url` (a `redis+sentinel://` URL) and `cli` (on whichever node is
    master now)."""

    PASSWORD = "netbed-secret"
    MASTER = "xero-net"

    def __init__(self, tmp):
        self.tmp = tmp
        self.procs = {}
        common = ["--port", "6379", "--requirepass", self.PASSWORD, "--masterauth", self.PASSWORD, "--save", "", "--appendonly", "no"]
        for host in ("redis", "redis2"):
            (tmp / host).mkdir(exist_ok=True)
            extra = [] if host == "redis" else ["--replicaof", ip("redis"), "6379"]
            self.procs[host] = subprocess.Popen(["ip", "netns", "exec", ns(host), "redis-server", "--bind", ip(host), *common,
                                                 "--dir", str(tmp / host), *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: "master_link_status:up" in self.node_cli("redis2", "INFO", "replication"), what="the replica in sync across hosts")
        self.sentinels = []
        for host in ("redis", "redis2", "sentinel"):
            conf = tmp / f"sentinel-{host}.conf"
            conf.write_text(f"port 26379\nbind {ip(host)}\ndir {tmp}\n"
                            f"sentinel monitor {self.MASTER} {ip('redis')} 6379 2\n"
                            f"sentinel auth-pass {self.MASTER} {self.PASSWORD}\n"
                            f"sentinel down-after-milliseconds {self.MASTER} 1000\n"
                            f"sentinel failover-timeout {self.MASTER} 10000\n")
            self.procs[f"sentinel-{host}"] = subprocess.Popen(["ip", "netns", "exec", ns(host), "redis-sentinel", str(conf)],
                                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.sentinels.append(host)
        for host in self.sentinels:
            wait_for(lambda: self.master_host(host) == ip("redis"), what=f"the sentinel on {host} watching the primary")
        self.url = f"redis+sentinel://:{self.PASSWORD}@" + ",".join(f"{ip(h)}:26379" for h in self.sentinels) + f"/{self.MASTER}"

    def master_host(self, sentinel="sentinel"):
        out = subprocess.run(["redis-cli", "-h", ip(sentinel), "-p", "26379", "--raw", "SENTINEL", "get-master-addr-by-name", self.MASTER],
                             capture_output=True, text=True, timeout=5).stdout.split()
        return out[0] if len(out) == 2 else None

    def node_cli(self, host, *args):
        return subprocess.run(["redis-cli", "-h", ip(host), "-p", "6379", "-a", self.PASSWORD, "--no-auth-warning", "--raw", *args],
                              capture_output=True, text=True, timeout=10).stdout.strip()

    def cli(self, *args):
        master = self.master_host() or ip("redis")
        host = next(h for h in ("redis", "redis2") if ip(h) == master)
        return self.node_cli(host, *args)

    def kill_primary(self):
        """SIGKILLs whichever node is master now; returns its host."""
        host = next(h for h in ("redis", "redis2") if ip(h) == self.master_host())
        self.procs[host].kill()
        self.procs[host].wait(10)
        return host

    def stop(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
                p.wait(10)


class NetPlatform(Platform):
    """Platform with every process in its host's namespace: each router binds its host's address,
    everything else connects to both routers by address."""

    HOST_OF = {"router": "router", "router-1": "router2", "gateway-1": "gw", "gateway-2": "gw2"}
    ROUTER_HOSTS = ("router", "router2")

    def _spawn(self, name, args, router_port=None):
        host = self.HOST_OF.get(name, name)
        if args[0] == "router":
            where = ["--router-host", ip(host), "--router-port", str(router_port or self.router_port)]
        else:
            where = [a for h, port in zip(self.ROUTER_HOSTS, self.router_ports) for a in ("--router", f"{ip(h)}:{port}")]
        if args[0] == "gateway":
            i = args.index("--port")
            args[i + 1] = "8080"
            args += ["--host", ip(host)]
        log = open(self.log_dir / f"{name}.log", "ab")
        config = [] if args[0] == "worker" else ["--config", str(self.config)]
        import os
        from conftest import BIN
        env = {**os.environ, "XERO_ROUTER_KEY": self.router_key}
        p = subprocess.Popen(["ip", "netns", "exec", ns(host), BIN, *args, *config, *where],
                             stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        self.procs[name] = p
        return p

    def start_gateway(self, name=None, *extra, tls=None):
        name = name or f"gateway-{len(self.gateways) + 1}"
        self._spawn(name, ["gateway", "--redis", self.redis.url, "--port", "8080", *extra])
        url = f"http://{ip(self.HOST_OF[name])}:8080"
        import httpx
        wait_for(lambda: httpx.get(url + "/health", timeout=1).status_code == 200, what=f"{name} health across the bridge")
        self.gateways.append(url)
        return url


@pytest.fixture(scope="module")
def bed(net, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("netbed")
    r = NetRedis(tmp)
    p = NetPlatform(r, tmp, config=CONFIG, routers=2)
    p.start_router(index=0)
    p.start_router(index=1)
    p.start_gateway()
    p.start_gateway()
    for w in ("w1", "w2", "w3"):
        p.start_worker(w, "--slots", "32", "--sim-tpot-ms", "20", "--sim-answer-tokens", "100000")
    p.demo = p.bootstrap(project="netbed", endpoint="ep")
    p.expected = expected_answer(p.gateways[0], p.demo)
    yield p
    p.shutdown()
    r.stop()


def works(gateway, demo):
    try:
        return client_for(gateway, demo, timeout=10).chat.completions.create(
            model="x", messages=PROMPT, max_tokens=3).choices[0].message.content != ""
    except openai.APIError:
        return False


WORKERS = ("w1", "w2", "w3")
ROUTERS = ("router", "router-1")


def test_baseline_across_hosts(bed):
    counts, errors = storm(bed)
    report("netbed no fault", counts, errors)
    assert counts["completed"] == 64


def test_a_worker_link_cut_mid_stream(bed):
    resumed = logged(bed, ROUTERS, "job resumed after its worker died")

    def cut():
        sh("ip", "-n", ns("w1"), "link", "set", "eth0", "down")
    try:
        counts, errors = storm(bed, during=cut)
    finally:
        sh("ip", "-n", ns("w1"), "link", "set", "eth0", "up")
    report("netbed worker link cut", counts, errors)
    # The cut worker's streams continue on the others (mid-stream migration): no client sees it.
    assert counts["completed"] == 64 and errors == [], (counts, errors)
    migrated = logged(bed, ROUTERS, "job resumed after its worker died") - resumed
    print("streams migrated off the cut worker:", migrated)
    assert migrated > 0, "the cut worker was running some of the streams"
    # It comes back: once the link is up, the worker re-joins and serves again.
    wait_for(lambda: bed.redis.cli("HGET", "xero:worker:w1", "state") == "ready"
             and int(bed.redis.cli("HGET", "xero:worker:w1", "last_heartbeat") or 0) > time.time() * 1000 - 2000,
             timeout=30, what="w1 back")


def test_a_worker_sigterm_under_load(bed):
    drained = []

    def drain():
        # The signal goes to the worker running the most streams (from the job records): placement
        # may leave one worker idle (two hold 64 streams; the shared prompt draws them together).
        jobs = jobs_of(bed, bed.demo["project_id"], "worker", "state").values()
        running = {w: sum(1 for worker, state in jobs if worker == w and state == "running") for w in WORKERS}
        name = max(WORKERS, key=lambda w: running[w])
        drained.append((name, running[name]))
        bed.procs[name].send_signal(15)
    # Streams of 6 s: the fault must find them running even when the client's 64 threads reach
    # their barrier late (a full run once saw the signal land 2 s after the streams began, as
    # the 2-s streams ended: nothing was running any more).
    counts, errors = storm(bed, during=drain, tokens=300)
    report("netbed worker SIGTERM", counts, errors)
    assert counts["completed"] == 64, "a draining worker finishes what it runs"
    name, running = drained[0]
    print(f"streams running on {name} at the signal:", running)
    assert running > 0, f"{name} was running streams when told to drain"
    bed.procs[name].wait(30)
    bed.procs.pop(name)
    bed.start_worker(name, "--slots", "32", "--sim-tpot-ms", "20", "--sim-answer-tokens", "100000")


def test_a_gateway_partitioned_from_one_router(bed):
    """The gateway loses one router (a blackhole route on its host) while both routers and every
    worker still talk. Its jobs on that router are handed over: the running ones adopted by the
    other router, which relays them from then on; none is lost or shown twice."""
    adopted = logged(bed, WORKERS, "job adopted by another router")

    def partition():
        sh("ip", "-n", ns("gw"), "route", "add", "blackhole", f"{ip('router')}/32")
    try:
        # 6-s streams, as for the SIGTERM: the gateway notices the lost router only after 1 s.
        counts, errors = storm(bed, during=partition, timeout=30, tokens=300)
    finally:
        sh("ip", "-n", ns("gw"), "route", "del", "blackhole", f"{ip('router')}/32", check=False)
    report("netbed gateway partitioned from one router", counts, errors)
    assert counts["completed"] == 64 and errors == [], (counts, errors)
    assert logged(bed, WORKERS, "job adopted by another router") > adopted, "streams the lost router relayed were adopted"
    wait_for(lambda: works(bed.gateways[0], bed.demo), timeout=40, what="requests succeeding after the partition heals")


def test_a_router_sigkilled_under_load(bed):
    """A router dies with jobs queued and streaming: the gateways hand its queued jobs to the other
    router and the workers have that router adopt the running ones. Then it comes back."""
    adopted = logged(bed, WORKERS, "job adopted by another router")

    def kill():
        bed.procs.pop("router-1").kill()
    counts, errors = storm(bed, during=kill, gateway=bed.gateways[1])
    report("netbed router SIGKILL", counts, errors)
    assert counts["completed"] == 64 and errors == [], (counts, errors)
    assert logged(bed, WORKERS, "job adopted by another router") > adopted, "streams the killed router relayed were adopted"
    bed.start_router(index=1)
    wait_for(lambda: "gateway alive" in bed.log("router-1").split("router listening")[-1], what="the restarted router's gateways")


def test_the_redis_primary_fails_over_under_load(bed):
    """SIGKILL the Redis primary with 64 streams running. Sentinel promotes the replica on another
    host; the streams (which need no Redis once admitted) finish, and every process finds the new
    master by itself: new requests succeed without a restart."""
    killed = []
    counts, errors = storm(bed, during=lambda: killed.append(bed.redis.kill_primary()))
    report("netbed Redis primary SIGKILL", counts, errors)
    assert counts["completed"] == 64 and errors == [], (counts, errors)
    started = time.time()
    wait_for(lambda: bed.redis.master_host() not in (None, ip(killed[0])), timeout=30, what="Sentinel to promote the replica")
    promoted = time.time() - started
    wait_for(lambda: works(bed.gateways[0], bed.demo) and works(bed.gateways[1], bed.demo), timeout=50,
             what="both gateways serving against the new master")
    print(f"netbed Redis failover: promoted after {promoted:.1f} s more; new requests served {time.time() - started:.1f} s after the kill's storm")
