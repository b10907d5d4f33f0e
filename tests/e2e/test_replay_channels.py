"""A handover's replay reaches its client whatever order the connections come back in
(docs/routing.md, "A replay goes out only when its client is subscribed").

PUB/SUB drops what is published before a subscription arrives. After a router restart its four
connections come back independently; these tests hold one of them back with a firewall rule (a
TCP reset for the router's port, on loopback) while streams are running, so the race that lost
requests in full runs happens every time:

- the worker's event channel (worker XPUB → router XSUB) comes back after its control link (this
  one needs nothing: the test holds the property that makes it safe);
- the client's event channel (router XPUB → gateway SUB) comes back after the worker adopted;
- the client's channel breaks and comes back while the same router stays up.

Every stream must then end with exactly the text an undisturbed run gives. The engine is the
simulated one (`--sim-*`): the test is about the fabric. Half the streams end while the channel is
held (their replay is a parked job's), half are still running when it returns.
"""
import contextlib
import re
import signal
import subprocess
import threading
import time

import openai
import pytest

from chaos import logged
from conftest import TEST_CONFIG, Platform, client_for, tier_stat, wait_for

LENGTHS = [12, 12, 150, 150]   # tokens at 30 ms: 0.4 s (ends during the fault) and 4.5 s (outlives it)


@contextlib.contextmanager
def refused_port(port):
    """Every TCP segment to 127.0.0.1:port is answered with a reset: connections there break and
    cannot be made again until the rule is gone."""
    rule = ["INPUT", "-i", "lo", "-p", "tcp", "--dport", str(port), "-j", "REJECT", "--reject-with", "tcp-reset"]
    subprocess.run(["iptables", "-I", *rule], check=True, timeout=10)
    try:
        yield
    finally:
        subprocess.run(["iptables", "-D", *rule], check=True, timeout=10)


# A tier of this file's own: its counters (summed over the session's shared Redis) are this test's.
REPLAY_CONFIG = TEST_CONFIG.replace("\ndemo:", "\n  - {name: replay, priority: 5, weight: 1, queue_timeout_ms: 2000, request_timeout_ms: 30000}\ndemo:")


def _streams_survive(p, fault, tier="standard"):
    p.start_router()
    p.start_gateway()
    for i in range(2):
        p.start_worker(f"ch-{i}", "--slots", "2", "--sim-tpot-ms", "30", "--sim-answer-tokens", "1000")
    demo = p.bootstrap(tier=tier)
    c = client_for(p.gateways[0], demo, timeout=60)
    prompts = [f"channel {i}" for i in range(len(LENGTHS))]

    def ask(i):
        return c.chat.completions.create(model="x", messages=[{"role": "user", "content": prompts[i]}], max_tokens=LENGTHS[i],
                                         temperature=0).choices[0].message.content

    # The undisturbed answers (the simulated engine's text depends on the prompt only).
    expected = [None] * len(LENGTHS)
    refs = [threading.Thread(target=lambda i=i: expected.__setitem__(i, ask(i))) for i in range(len(LENGTHS))]
    for t in refs:
        t.start()
    for t in refs:
        t.join(60)
    assert all(e and e.startswith(f"You said: channel {i}.") for i, e in enumerate(expected)), expected

    outcomes = [None] * len(LENGTHS)
    started = [threading.Event() for _ in LENGTHS]

    def stream(i):
        try:
            text = ""
            for ch in c.chat.completions.create(model="x", messages=[{"role": "user", "content": prompts[i]}], max_tokens=LENGTHS[i],
                                                temperature=0, stream=True):
                if ch.choices and ch.choices[0].delta.content:
                    text += ch.choices[0].delta.content
                    started[i].set()
            outcomes[i] = text
        except openai.APIError as e:
            outcomes[i] = f"error: {getattr(e, 'code', None) or getattr(e, 'status_code', None)}"
        finally:
            started[i].set()

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(len(LENGTHS))]
    for t in threads:
        t.start()
    for s in started:
        assert s.wait(20), "every stream started before the fault"
    seen = fault(p)
    for t in threads:
        t.join(60)
    print("outcomes:", [o if o is None or o.startswith("error") else len(o) for o in outcomes], seen)
    assert outcomes == expected, [(i, o[:60] if o else o) for i, o in enumerate(outcomes) if o != expected[i]]
    return seen


def _restart_router(p):
    p.procs["router"].send_signal(signal.SIGKILL)
    p.procs.pop("router").wait(10)
    time.sleep(0.3)
    p.start_router()


def test_a_workers_event_channel_that_returns_late_loses_nothing(redis, tmp_path):
    """The router restarts with its events-in port refusing connections for 1.5 s: the workers'
    control links rejoin and adopt at once, their event channels only later. Nothing is lost: a
    worker's XPUB connects, and a connecting socket keeps its pipe across reconnects, so what it
    sends meanwhile (the replays included) is queued and delivered to the new router. This holds
    that property: a worker that bound its events socket, or dropped its queue on reconnect
    (ZMQ_IMMEDIATE), would fail here."""
    p = Platform(redis, tmp_path)

    def fault(p):
        with refused_port(p.router_port + 2):
            _restart_router(p)
            wait_for(lambda: logged(p, ["router"], "job adopted") >= len(LENGTHS), what="the jobs adopted while the channel is held")
            time.sleep(1.0)
        return {}

    try:
        _streams_survive(p, fault)
    finally:
        p.shutdown()


def test_an_adoption_waits_for_the_clients_event_channel(redis, tmp_path):
    """The router restarts with its events-out port refusing connections for 1.5 s: the workers
    adopt their jobs at once, the gateway cannot subscribe yet. The router answers those adoptions
    only when the gateway's subscription arrives, so the `adopted` notices and replays reach it
    (before the fix they were dropped, and the streams ended `stream_interrupted` after 3 s)."""
    p = Platform(redis, tmp_path)

    def fault(p):
        with refused_port(p.router_port + 3):
            _restart_router(p)
            wait_for(lambda: "router asked who we are" in p.log("ch-0") + p.log("ch-1"), what="a worker's control link back")
            time.sleep(1.5)
            held = logged(p, ["router"], "job adopted")
        wait_for(lambda: logged(p, ["router"], "job adopted") >= len(LENGTHS), what="the adoptions answered once the client is here")
        return {"adopted_while_held": held}

    try:
        seen = _streams_survive(p, fault)
        assert seen["adopted_while_held"] == 0, "no adoption answered while the client is not subscribed"
    finally:
        p.shutdown()


def test_a_client_whose_channel_breaks_gets_the_gap_replayed(redis, tmp_path):
    """The same router stays up; the gateway's event connection is reset and refused for 1.5 s
    while streams run (the router's side of it may never see the end). When the gateway
    subscribes again the router has the workers replay its running jobs, and the gateway keeps
    the events it lacked (before the fix: a gap, `stream_interrupted`)."""
    p = Platform(redis, tmp_path, config=REPLAY_CONFIG)

    def fault(p):
        with refused_port(p.router_port + 3):
            time.sleep(1.5)
        return {}

    try:
        _streams_survive(p, fault, tier="replay")
        replays = [int(m) for m in re.findall(r"jobs=(\d+) \[XeroRouter\] client's event channel back", p.log("router"))]
        assert replays and max(replays) >= 1, f"the router had the returning client's jobs replayed: {replays}"
        # Each request finished once: a job handed back for a replay is not finished (counted,
        # settled) again. 4 undisturbed answers and 4 streams.
        wait_for(lambda: tier_stat(p.redis, "replay", "completed_total") >= 8, what="the tier's counters written")
        time.sleep(1.2)   # one more stats write: a second finish would show by now
        assert tier_stat(p.redis, "replay", "completed_total") == 8
    finally:
        p.shutdown()
