"""Redis without a single point of failure: a primary, a replica and three Sentinels (Debian's
`redis-sentinel`); the platform is given a `redis+sentinel://` URL. The primary is SIGKILLed under
traffic: Sentinel promotes the replica and every process (gateway, router) reconnects to it on
its own, with no restart. Keys, usage and settlements written before the kill survive (writes that
matter wait for the replica: `WAIT`)."""
import signal
import subprocess
import threading
import time

import httpx
import openai
import pytest

from conftest import Platform, Redis, client_for, free_port, wait_for


class SentinelRedis:
    """What Platform needs of a Redis (`url`, `cli`), backed by a primary, a replica and three
    Sentinels on loopback; `cli` talks to whichever node is master now."""

    MASTER = "xero-master"

    def __init__(self, tmp):
        self.tmp = tmp
        self.primary = Redis(tmp / "primary")
        self.replica = Redis(tmp / "replica")
        self.replica.cli("REPLICAOF", "127.0.0.1", str(self.primary.port))
        wait_for(lambda: "master_link_status:up" in self.replica.cli("INFO", "replication"), what="replica in sync")
        self.sentinels = []
        for i in range(3):
            port = free_port()
            conf = tmp / f"sentinel-{i}.conf"
            conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {tmp}\n"
                            f"sentinel monitor {self.MASTER} 127.0.0.1 {self.primary.port} 2\n"
                            f"sentinel down-after-milliseconds {self.MASTER} 1000\n"
                            f"sentinel failover-timeout {self.MASTER} 10000\n"
                            f"sentinel parallel-syncs {self.MASTER} 1\n")
            p = subprocess.Popen(["redis-sentinel", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.sentinels.append((port, p))
        for port, _ in self.sentinels:
            wait_for(lambda: self.ask(port) == str(self.primary.port), what=f"sentinel {port} monitoring")
        self.url = "redis+sentinel://" + ",".join(f"127.0.0.1:{port}" for port, _ in self.sentinels) + f"/{self.MASTER}"

    def ask(self, port):
        out = subprocess.run(["redis-cli", "-p", str(port), "--raw", "SENTINEL", "get-master-addr-by-name", self.MASTER],
                             capture_output=True, text=True, timeout=5).stdout.split()
        return out[1] if len(out) == 2 else None

    def master_port(self):
        return int(self.ask(self.sentinels[0][0]))

    def cli(self, *args):
        out = subprocess.run(["redis-cli", "-p", str(self.master_port()), "--raw", *args], capture_output=True, text=True, timeout=10)
        return out.stdout.strip()

    def stop(self):
        for _, p in self.sentinels:
            p.terminate()
        for r in (self.primary, self.replica):
            if r.proc.poll() is None:
                r.stop()


@pytest.fixture
def sentinel_platform(tmp_path):
    (tmp_path / "primary").mkdir()
    (tmp_path / "replica").mkdir()
    (tmp_path / "platform").mkdir()
    r = SentinelRedis(tmp_path)
    p = Platform(r, tmp_path / "platform")
    p.start_router()
    p.start_gateway()
    p.start_worker("sentinel-w", "--slots", "16", "--sim-tpot-ms", "2")
    p.demo = p.bootstrap(project="ha", endpoint="ep", scopes="inference,management")
    yield p, r
    p.shutdown()
    r.stop()


def test_platform_survives_a_primary_failover(sentinel_platform):
    p, r = sentinel_platform
    c = client_for(p.gateways[0], p.demo, timeout=30)
    assert c.chat.completions.create(model="x", messages=[{"role": "user", "content": "before"}], max_tokens=3).usage.completion_tokens == 3
    # Everything so far is on the replica before the primary dies.
    assert int(r.primary.cli("WAIT", "1", "5000")) == 1
    old = r.primary.port

    # Traffic throughout: a request every 50 ms; each records when it ended and how.
    results, stop = [], threading.Event()

    def load():
        lc = client_for(p.gateways[0], p.demo, timeout=30)
        while not stop.is_set():
            try:
                lc.chat.completions.create(model="x", messages=[{"role": "user", "content": "during"}], max_tokens=2)
                results.append((time.monotonic(), "ok"))
            except openai.APIStatusError as e:
                results.append((time.monotonic(), e.status_code))
            except openai.APIConnectionError:
                results.append((time.monotonic(), "connection"))
            time.sleep(0.05)

    t = threading.Thread(target=load, daemon=True)
    t.start()
    time.sleep(0.5)
    killed_at = time.monotonic()
    r.primary.proc.send_signal(signal.SIGKILL)
    r.primary.proc.wait(5)
    wait_for(lambda: r.master_port() != old, timeout=60, what="Sentinel promoted the replica")
    promoted_at = time.monotonic()
    # The platform's processes find the new master themselves: requests succeed again.
    def recovered():
        return any(ts > promoted_at and outcome == "ok" for ts, outcome in results)
    wait_for(recovered, timeout=50, what="requests succeeding after the failover")
    first_ok = min(ts for ts, outcome in results if ts > promoted_at and outcome == "ok")
    time.sleep(1)
    stop.set()
    t.join(30)
    after = [o for ts, o in results if ts > first_ok]
    errors = [o for ts, o in results if killed_at < ts <= first_ok and o != "ok"]
    print(f"sentinel failover: promoted {promoted_at - killed_at:.1f} s after the kill; platform serving again "
          f"{first_ok - promoted_at:.2f} s after the promotion; errors meanwhile {errors}; after: {len(after)} requests")
    assert first_ok - promoted_at < 50, "every process reconnects within 10x the 5 s bound"
    assert after and all(o == "ok" for o in after), f"once recovered, every request succeeds: {after}"
    assert all(o == 503 for o in errors), f"while Redis was away, clear 503s only: {errors}"
    # What was written before the kill survived: the key still works (a fresh gateway, no cache),
    # and the usage recorded before it is there.
    g2 = p.start_gateway("gateway-after")
    r2 = client_for(g2, p.demo).chat.completions.create(model="x", messages=[{"role": "user", "content": "after"}], max_tokens=3)
    assert r2.usage.completion_tokens == 3
    # Billing lost nothing: every answered request is settled exactly once, those settled on the
    # old primary (replicated before it died) and those retried on the new one alike.
    answered = 2 + sum(1 for _, o in results if o == "ok")

    def billed():
        u = httpx.get(g2 + "/manage/v1/usage", headers={"Authorization": f"Bearer {p.demo['api_key']}"}, timeout=10)
        return u.json()["total"].get("requests") if u.status_code == 200 else None
    wait_for(lambda: billed() == answered, timeout=30, what=f"usage showing all {answered} answered requests (now {billed()})")
