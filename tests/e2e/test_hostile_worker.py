"""A hostile worker: a Python process-in-a-thread that joins the router with a valid join key and then
lies on every field of the wire protocol (tests/e2e/wire.py encodes it), while real clients talk to a
real simulator worker in the same deployment.

The hostile worker sends out-of-range hellos, credits and heartbeats; started/done reports for jobs
it never had and, with absurd numbers, for jobs it had; prefix reports that claim a billion hashes or
stop short; garbage, empty and 3-frame messages; and on its event socket forged StreamEvents for the
requests it was dispatched (choice index -1 and 2**40, tool index -1, vectors of dim 2**61 with data
that does not match, error statuses 1000, -1, 99999 and 200, sequence gaps, then a done).

What must hold: the router, the gateway and the real worker survive; every client request either
completed with exactly the simulator's text (as the same request produced before the hostile worker
joined) or — only if it was dispatched to the hostile worker — ended in a clean OpenAI-shaped error
(an HTTP 4xx/5xx with an `error` object, or an SSE error event); no request hangs; and the gateway
answers a fresh request correctly afterwards.
"""
import json
import random
import threading
import time

import httpx
import pytest
import zmq

import wire
from conftest import Platform, curve_keys_for, wait_for

HOSTILE_ID = "hostile-w"     # sorts before "real-w": on equal free fractions the router prefers it
REQUEST_TIMEOUT_S = 30.0

# Short request timeout (4 s): a job the hostile worker abandons without a terminal event is ended by
# the gateway's own safety net (request timeout + 5 s) well inside the client's 30 s.
CONFIG = """
tiers:
  - {name: standard, priority: 5, weight: 1, queue_timeout_ms: 5000, request_timeout_ms: 4000}
  - {name: batch, priority: 0, weight: 0, queue_timeout_ms: 86400000, request_timeout_ms: 4000}
demo: {project_slug: demo, project_name: Demo, endpoint_slug: my-endpoint, model: demo-model, tier: standard}
"""


@pytest.fixture
def hp(redis, tmp_path):
    p = Platform(redis, tmp_path, config=CONFIG)
    yield p
    p.shutdown()


class HostileWorker(threading.Thread):
    """Owns its ZeroMQ sockets (only this thread touches them)."""

    def __init__(self, router_port, join_key, router_key):
        super().__init__(daemon=True, name="hostile-worker")
        self.router_port = router_port
        self.join_key = join_key
        self.router_key = router_key
        self.ready = threading.Event()       # the plausible hello has been sent
        self.stop_now = threading.Event()
        self.stopped = threading.Event()
        self.jobs = []                       # (JobEnvelope, scenario name)
        self.dispatched = set()              # (last user message, stream?) of every job it was given
        self.from_router = []                # decoded router messages other than jobs
        self.errors = []
        self.lock = threading.Lock()
        self.rng = random.Random(4321)

    # -- helpers --------------------------------------------------------------------------------

    def hello(self, slots, free, id=HOSTILE_ID, models=("*",)):
        return wire.hello(id, slots, free, models=list(models), capabilities=["chat"], engine="hostile", host="evil",
                          pid=666, join_key=self.join_key)

    def control(self, *frames):
        self.dealer.send_multipart(list(frames))

    def publish(self, topic, *frames):
        self.xpub.send_multipart([topic.encode(), *frames])

    def pump(self, seconds):
        """Reads what the router sends for `seconds` (answering jobs), heartbeating as it goes."""
        deadline = time.monotonic() + seconds
        while True:
            now = time.monotonic()
            if now - self.last_heartbeat >= 0.3:
                self.control(wire.heartbeat(0))
                self.last_heartbeat = now
            left = deadline - now
            if left <= 0:
                return
            if self.dealer.poll(min(100, int(left * 1000) + 1)):
                self.on_router(self.dealer.recv_multipart())

    def on_router(self, frames):
        if len(frames) != 1:
            self.from_router.append(("frames", len(frames)))
            return
        try:
            kind, value = wire.decode_router_message(frames[0])
        except wire.WireError as e:
            self.errors.append(f"undecodable router message: {e}")
            return
        if kind == "job":
            self.on_job(value)
        else:
            self.from_router.append((kind, value))
            if kind == "identify" and self.ready.is_set():
                self.control(self.hello(4, 4))

    # -- what it does with jobs ---------------------------------------------------------------

    SCENARIOS = ["bad_indices", "bad_vectors", "seq_gaps", "status_99999", "status_200", "bad_seqs", "garbage_frames", "silent"]

    def on_job(self, job):
        try:
            body = json.loads(job.payload)
            last = body["messages"][-1]["content"]
            key = (last, bool(body.get("stream")))
        except Exception:  # noqa: BLE001
            key = (None, None)
        scenario = self.SCENARIOS[len(self.jobs) % len(self.SCENARIOS)]
        with self.lock:
            self.jobs.append((job, scenario))
            self.dispatched.add(key)
        rid, a, t = job.request_id, job.attempt, job.topic
        # Forged router notices on the gateway's own topic: were they relayed, the gateway would
        # take the router for restarted, re-submit its jobs and fail every running stream.
        gateway_topic = t.rsplit("/", 1)[0] + "/"
        self.publish(gateway_topic, wire.notice_alive("router-forged"))
        self.publish(gateway_topic, wire.notice_accepted(rid, "router-forged"))
        if scenario != "silent":
            self.control(wire.started(rid))
        if scenario == "bad_indices":
            self.publish(t, wire.ev_delta(rid, a, 0, -1, "evil"))
            self.publish(t, wire.ev_delta(rid, a, 1, 2 ** 40, "evil"))
            self.publish(t, wire.ev_tool_call(rid, a, 2, 0, -1, "call_evil", "f", "{}"))
            self.publish(t, wire.ev_tool_call(rid, a, 3, -1, 2 ** 40, "call_evil", "f", "{}"))
            self.publish(t, wire.ev_finish(rid, a, 4, -1, "stop"))
            self.publish(t, wire.ev_error(rid, a, 5, 1000, "status 1000"))
            self.publish(t, wire.ev_done(rid, a, 6, 1, 1, 0))
        elif scenario == "bad_vectors":
            self.publish(t, wire.ev_vectors(rid, a, 0, 2 ** 61, b"\x00" * 12))
            self.publish(t, wire.ev_vectors(rid, a, 1, 3, b"\x01" * 5))
            self.publish(t, wire.ev_vectors(rid, a, 2, -1, b""))
            self.publish(t, wire.ev_error(rid, a, 3, -1, "status -1"))
            self.publish(t, wire.ev_done(rid, a, 4))
        elif scenario == "seq_gaps":
            # Valid-looking events with holes in seq, then a done: the gateway must not pass a
            # stream with lost events off as a complete answer.
            self.publish(t, wire.ev_delta(rid, a, 0, 0, "You said: gap"))
            self.publish(t, wire.ev_delta(rid, a, 5, 0, " more"))
            self.publish(t, wire.ev_finish(rid, a, 9, 0, "stop"))
            self.publish(t, wire.ev_done(rid, a, 12, 3, 3, 0))
        elif scenario == "status_99999":
            self.publish(t, wire.ev_delta(rid, a, 0, 0, "partial"))
            self.publish(t, wire.ev_error(rid, a, 1, 99999, "status 99999", "weird_type", "p", "c"))
            self.publish(t, wire.ev_done(rid, a, 2))
        elif scenario == "status_200":
            self.publish(t, wire.ev_error(rid, a, 0, 200, "an error with status 200"))
            self.publish(t, wire.ev_done(rid, a, 1))
        elif scenario == "bad_seqs":
            self.publish(t, wire.ev_delta(rid, a, -1, 0, "negative seq"))
            self.publish(t, wire.ev_delta(rid, a, 2 ** 62, 0, "huge seq"))
            self.publish(t, wire.ev_delta(rid, 2 ** 40, 0, 0, "other attempt"))
            self.publish(t, wire.ev_done(rid, a, -(2 ** 63), -5, 2 ** 62, -1))
            self.publish(t, wire.ev_error(rid, a, 3, 1000, "status 1000 after a bad done"))
            self.publish(t, wire.ev_done(rid, a, 4))
        elif scenario == "garbage_frames":
            good = wire.ev_delta(rid, a, 0, 0, "x")
            self.xpub.send_multipart([t.encode()])                       # topic only
            self.publish(t, b"")                                         # empty event
            self.publish(t, b"\x45")                                     # kind byte only
            self.publish(t, bytes([wire.KIND_EVENT, (wire.WIRE_VERSION + 1) & 0xFF]) + good[2:])   # wrong version
            self.publish(t, good[:-3])                                   # truncated
            self.publish(t, good + b"\x00")                              # trailing byte
            self.publish(t, good, b"third frame")                        # 3 frames
            self.publish(t, bytes(self.rng.randrange(256) for _ in range(64)))
            self.publish(t, wire.Writer().header(wire.KIND_EVENT).string(rid).int(a).int(0).u8(1).int(0)
                         .u32(0x7FFF_FFFF).raw(b"abc").bytes())                                            # text claims 2 GiB
            self.publish(t, wire.Writer().header(wire.KIND_EVENT).string(rid).int(a).int(0).u8(77).bytes())               # unknown body
            self.publish(t, wire.ev_error(rid, a, 1, 99999, "status 99999 after garbage"))
            self.publish(t, wire.ev_done(rid, a, 2))
        # "silent" publishes nothing: the client's answer comes from the platform's own deadlines.
        # Reports with absurd numbers for the job it was given, then a plausible one.
        for attempt, ptoks, ctoks, first, fin in [(0, -1, -1, -1, -1), (-5, 2 ** 62, 2 ** 62, 2 ** 62, 2 ** 62),
                                                  (2 ** 40, -(2 ** 63), 2 ** 63 - 1, -(2 ** 63), 2 ** 63 - 1),
                                                  (a, -1, 2 ** 62, 0, 0), (a, 5, 5, -1, 2 ** 62), (a, 2 ** 62, -1, 2 ** 62, -1)]:
            self.control(wire.done(rid, attempt, "done", first, fin, ptoks, ctoks))
        # Handover messages (docs/routing.md, "Handover"): a ticket it made up, its own ticket with
        # one byte flipped, an empty one; a `moved` for a request it does not run; reclaims out of
        # range. None may make the router relay anything for it or hand it credits it never had.
        forged = bytearray(job.ticket)
        if forged:
            forged[len(forged) // 2] ^= 0x01
        for ticket in (bytes(self.rng.getrandbits(8) for _ in range(200)), bytes(forged), b""):
            self.control(wire.adopt(ticket, started=True))
        self.control(wire.moved("chatcmpl-not-mine"))
        for n in (0, -1, 5000, 2 ** 62):
            self.control(wire.reclaim(n))
        now = int(time.time() * 1000)
        self.control(wire.done(rid, a, "error:hostile", now, now, 1, 1))

    # -- the run --------------------------------------------------------------------------------

    def run(self):
        ctx = zmq.Context()
        try:
            self.dealer = ctx.socket(zmq.DEALER)
            self.dealer.setsockopt(zmq.ROUTING_ID, HOSTILE_ID.encode())
            self.dealer.setsockopt(zmq.LINGER, 0)
            self.xpub = ctx.socket(zmq.XPUB)
            self.xpub.setsockopt(zmq.LINGER, 0)
            # A real agent's credentials: the CURVE key pair its join key derives.
            public, secret = curve_keys_for(self.join_key)
            for sock in (self.dealer, self.xpub):
                sock.curve_serverkey = self.router_key.encode()
                sock.curve_publickey = public
                sock.curve_secretkey = secret
            self.dealer.connect(f"tcp://127.0.0.1:{self.router_port + 1}")
            self.xpub.connect(f"tcp://127.0.0.1:{self.router_port + 2}")
            self.last_heartbeat = 0.0
            # Like Worker.swift: say hello only once the router's XSUB has subscribed to our events.
            if not self.xpub.poll(10_000):
                self.errors.append("no subscription from the router's XSUB within 10 s")
                return
            sub = self.xpub.recv()
            if sub[:1] != b"\x01":
                self.errors.append(f"unexpected first XPUB frame {sub!r}")
            self.attack_before_join()
            self.control(self.hello(4, 4))           # plausible: now the router dispatches to it
            self.pump(0.2)
            self.ready.set()
            self.attack_after_join()
            while not self.stop_now.is_set():
                self.pump(0.1)
            self.control(wire.draining())
            self.pump(0.1)
            self.control(wire.bye())
            time.sleep(0.1)
        except Exception as e:  # noqa: BLE001
            self.errors.append(f"hostile worker crashed: {e!r}")
        finally:
            self.stopped.set()
            ctx.destroy(linger=0)

    def attack_before_join(self):
        # Messages from a worker the router does not know yet, then hellos with impossible numbers.
        self.control(wire.credit(5))
        self.control(wire.heartbeat(-1))
        self.control(self.hello(4, 4, id="someone-else"))            # id is not the routing id
        for slots, free in [(0, 0), (-1, -1), (-1, 4), (2 ** 62, 2 ** 62), (4, 100), (4, -5), (-(2 ** 63), 2 ** 63 - 1)]:
            self.control(self.hello(slots, free))
            self.pump(0.05)
        h = self.hello(4, 4)
        self.control(h[:-3])                                             # truncated hello
        self.control(h + b"\x00")                                        # trailing byte
        self.control(wire.Writer().header(wire.KIND_WORKER).u8(1).string(HOSTILE_ID).int(4).int(4)
                     .u32(10 ** 9).bytes())                              # a billion model names, none sent
        self.pump(0.1)

    def attack_after_join(self):
        c = self.control
        for n in [2 ** 63 - 1, -(2 ** 63), 0, -1, 2 ** 62]:
            c(wire.credit(n))
        for n in [-1, -(2 ** 63), 2 ** 63 - 1]:
            c(wire.heartbeat(n))
        for rid in ["never-given", "", "x" * 100_000]:
            c(wire.started(rid))
            c(wire.done(rid, 0, "done", -1, 2 ** 62, -1, 2 ** 62))
            c(wire.done(rid, -5, "", 2 ** 62, -1, 2 ** 62, -1))
            c(wire.done(rid, 2 ** 40, "x" * 10_000, -(2 ** 63), 2 ** 63 - 1, -(2 ** 63), 2 ** 63 - 1))
        c(wire.prefixes([1, 2, 3], claimed_count=10 ** 9))
        c(wire.prefixes([1, 2, 3], claimed_count=-1))
        c(wire.prefixes([1, 2, 3])[:-5])                                 # truncated
        c(wire.prefixes([]) + b"\x01")                                   # trailing
        c(wire.prefixes(list(range(70_000))))                            # more than any engine holds
        # Garbage, empty and multi-frame messages.
        c(b"")
        c(b"W")
        c(bytes([wire.KIND_WORKER, wire.WIRE_VERSION]))                  # header, no tag
        c(bytes([wire.KIND_WORKER, wire.WIRE_VERSION, 99]))              # unknown tag
        c(bytes([wire.KIND_WORKER, (wire.WIRE_VERSION + 1) & 0xFF, 3]) + b"\x00" * 8)   # wrong version
        c(bytes(self.rng.randrange(256) for _ in range(200)))
        c(b"a", b"b", b"c")                                              # 3 frames (4 with the identity)
        c(wire.heartbeat(0), b"")                                        # 2 frames
        # Events for topics nobody asked for, and garbage on the event socket.
        self.xpub.send_multipart([b""])
        self.xpub.send_multipart([b"no-such-gateway/none", b"\x00" * 10])
        self.xpub.send_multipart([b"x", b"y", b"z"])
        self.xpub.send_multipart([b"\x01subscribed"])
        self.pump(0.1)
        # A last plausible hello: whatever the lies did to its record, the router now has 4 slots for it.
        c(self.hello(4, 4))
        self.pump(0.1)


def run_request(client, url, key, prompt, stream):
    """Returns (outcome, text or error detail). outcome: ok | error | hung | broken."""
    body = {"model": "any", "messages": [{"role": "user", "content": prompt}], "max_tokens": 8}
    if stream:
        body["stream"] = True
    headers = {"Authorization": f"Bearer {key}"}
    try:
        with client.stream("POST", url, json=body, headers=headers, timeout=REQUEST_TIMEOUT_S) as r:
            raw = r.read()
    except httpx.TimeoutException as e:
        return "hung", repr(e)
    except httpx.TransportError as e:
        return "broken", f"transport error: {e!r}"
    if r.status_code != 200:
        try:
            err = json.loads(raw)["error"]
            assert isinstance(err, dict) and isinstance(err.get("message"), str)
            return "error", f"{r.status_code} {err.get('code')}: {err['message'][:120]}"
        except Exception:  # noqa: BLE001
            return "broken", f"{r.status_code} without an OpenAI error body: {raw[:200]!r}"
    if not stream:
        try:
            return "ok", json.loads(raw)["choices"][0]["message"]["content"]
        except Exception:  # noqa: BLE001
            return "broken", f"200 that is not a chat.completion: {raw[:300]!r}"
    text, done = [], False
    for line in raw.decode("utf-8", "replace").split("\n"):
        if not line.startswith("data: "):
            continue
        data = line[6:]
        if data == "[DONE]":
            done = True
            continue
        try:
            ev = json.loads(data)
        except ValueError:
            return "broken", f"SSE event that is not JSON: {data[:200]!r}"
        if "error" in ev:
            if isinstance(ev["error"], dict) and isinstance(ev["error"].get("message"), str):
                return "error", f"SSE error {ev['error'].get('code')}: {ev['error']['message'][:120]}"
            return "broken", f"SSE error without an OpenAI error object: {data[:200]!r}"
        for ch in ev.get("choices") or []:
            text.append((ch.get("delta") or {}).get("content") or "")
    if not done:
        return "broken", f"stream ended without [DONE] or an error: {raw[-200:]!r}"
    return "ok", "".join(text)


def test_hostile_worker_cannot_break_router_gateway_or_clients(hp):
    """(Also: forged router notices on a gateway's topic are dropped by the router; the gateway
    never takes the router for restarted.)"""
    t_start = time.monotonic()
    p = hp
    p.start_router()
    gw = p.start_gateway()
    p.start_worker("real-w", "--sim-tpot-ms", "0", "--slots", "4")
    demo = p.bootstrap(project="hostile", endpoint="chat", model="hostile-model")   # not the shared fixture's demo project
    url = gw + demo["base_path"] + "/chat/completions"
    key = demo["api_key"]
    client = httpx.Client(limits=httpx.Limits(max_connections=32, max_keepalive_connections=32))
    prompts = [f"hostile check {i}" for i in range(32)]
    fresh = "a fresh request after the attack"

    # What the simulator answers for each prompt, while only the real worker serves.
    expected = {}
    for prompt in prompts + [fresh]:
        outcome, text = run_request(client, url, key, prompt, stream=False)
        assert outcome == "ok", (prompt, outcome, text)
        assert text.startswith(f"You said: {prompt}"), text
        expected[prompt] = text

    hostile = HostileWorker(p.router_port, p.join_key, p.router_key)
    hostile.start()
    assert hostile.ready.wait(20), f"the hostile worker never got going: {hostile.errors}"
    wait_for(lambda: "worker=hostile-w" in p.log("router") or "hostile-w" in p.redis.cli("ZRANGE", "xero:workers", "0", "-1"),
             timeout=10, what="the router to accept the hostile worker")

    # Real clients, streaming and not, concurrently with the attack.
    work = [(pr, s) for pr in prompts for s in (False, True)]
    random.Random(99).shuffle(work)
    results = {}
    lock = threading.Lock()

    def client_thread(items):
        for pr, s in items:
            out = run_request(client, url, key, pr, s)
            with lock:
                results[(pr, s)] = out

    threads = [threading.Thread(target=client_thread, args=(work[i::8],), daemon=True) for i in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 45
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic()))
    still_running = sum(t.is_alive() for t in threads)

    hostile.stop_now.set()
    hostile.stopped.wait(5)
    # Once the hostile worker has said goodbye, the gateway must answer correctly again.
    time.sleep(0.3)
    fresh_outcome = run_request(client, url, key, fresh, stream=False)
    fresh_stream = run_request(client, url, key, fresh, stream=True)
    client.close()

    with lock:
        results = dict(results)
    with hostile.lock:
        dispatched = set(hostile.dispatched)
    completed = sum(1 for o, _ in results.values() if o == "ok")
    errors = sum(1 for o, _ in results.values() if o == "error")
    hung = sum(1 for o, _ in results.values() if o == "hung") + (len(work) - len(results))
    broken = sum(1 for o, _ in results.values() if o == "broken")
    summary = (f"completed={completed} errors={errors} hung={hung} broken={broken} of {len(work)}; hostile got {len(hostile.jobs)} jobs "
               f"({sorted({s for _, s in hostile.jobs})}); router said to it: {hostile.from_router[:6]}; "
               f"hostile problems: {hostile.errors}; took {time.monotonic() - t_start:.1f}s")
    print(summary)

    dead = {name: proc.returncode for name, proc in p.procs.items() if proc.poll() is not None}
    tails = "\n".join(f"--- {name} exited {rc}:\n" + "\n".join(p.log(name).splitlines()[-20:]) for name, rc in dead.items())
    assert not dead, f"processes died: {dead}\n{summary}\n{tails}"
    for name in ("router", "gateway-1", "real-w"):
        assert p.procs[name].poll() is None, name

    wrong = []
    for (pr, s), (outcome, detail) in sorted(results.items()):
        if outcome == "ok" and detail == expected[pr]:
            continue
        if outcome == "error" and (pr, s) in dispatched:
            continue
        why = "forged or wrong text accepted" if outcome == "ok" else (
            "an error for a request the hostile worker never had" if outcome == "error" else outcome)
        wrong.append(f"{pr!r} stream={s} hostile={(pr, s) in dispatched}: {why}: {detail[:200]}")
    assert still_running == 0 and hung == 0, f"{hung} requests hung\n{summary}"
    assert not wrong, f"{len(wrong)} requests ended badly\n{summary}\n  " + "\n  ".join(wrong[:12])
    assert fresh_outcome == ("ok", expected[fresh]), (fresh_outcome, summary)
    assert fresh_stream == ("ok", expected[fresh]), (fresh_stream, summary)
    assert "router restarted" not in p.log("gateway-1"), "a forged router notice reached the gateway"
    assert hostile.jobs, f"the router never dispatched to the hostile worker, so nothing was tested\n{summary}"
    # The gateway billed these jobs (rate limits are on), yet no worker learns whose key ran them.
    assert all(job.billing is None for job, _ in hostile.jobs), "a worker was sent a job's billing"
    # Every job came with a sealed ticket; no forged or altered one was accepted.
    assert all(len(job.ticket) > 28 for job, _ in hostile.jobs), "a job without its ticket"
    assert not [m for m in hostile.from_router if m[0] == "adopted"], "a forged ticket was accepted"
    assert "adoption with a ticket that does not open" in p.log("router")
    assert not hostile.errors, summary
