"""The fabric behind the gateway trusts nobody: real router, gateway and workers (the simulator)
with CURVE, attacked with pyzmq.

- An outsider on every router port — once with plain ZeroMQ, once with a CURVE key pair of its own
  and the real server public key — subscribes, submits, forges events and cancels another client's
  request. It receives nothing and changes nothing.
- Project B's agent (a valid join key, serving `*` with 1,000 slots) forges events and `done`
  messages for project A's live requests. They are ignored; A's streams complete unchanged.
- Revoking the join key of a connected, streaming worker stops all of its traffic within a bound.
- A capture of the loopback traffic shows neither the prompt, nor the answer, nor the join key.
"""
import shutil
import signal
import subprocess
import threading
import time

import httpx
import pytest
import zmq

import wire
from conftest import Platform, client_for, curve_keys_for, wait_for

SECRET_PROMPT = "the-launch-code-is-7f3a9c"


@pytest.fixture(scope="module")
def fs(redis, tmp_path_factory):
    p = Platform(redis, tmp_path_factory.mktemp("fabricsec"))
    p.start_router()
    p.start_gateway()
    p.start_worker("fs-w1", "--sim-tpot-ms", "5", "--slots", "32")
    p.a = p.bootstrap(project="sec-a", scopes="inference,management")
    p.b = p.bootstrap(project="sec-b", scopes="inference,management")
    p.admin = p.create_admin_key()
    yield p
    p.shutdown()


def stream_text(client, content, max_tokens=40):
    out = []
    for c in client.chat.completions.create(model="m", messages=[{"role": "user", "content": content}], stream=True, max_tokens=max_tokens):
        if c.choices and c.choices[0].delta.content:
            out.append(c.choices[0].delta.content)
    return "".join(out)


def ports(p):
    base = p.router_port
    return {"jobs": base, "workers": base + 1, "events_in": base + 2, "events_out": base + 3}


class Outsider:
    """Sockets on every router port; `curve` gives it its own key pair and the real server key."""

    def __init__(self, p, curve):
        self.ctx = zmq.Context()
        self.socks = []
        pt = ports(p)

        def sock(kind, port):
            s = self.ctx.socket(kind)
            s.setsockopt(zmq.LINGER, 0)
            if curve:
                pub, sec = zmq.curve_keypair()
                s.curve_serverkey, s.curve_publickey, s.curve_secretkey = p.router_key.encode(), pub, sec
            s.connect(f"tcp://127.0.0.1:{port}")
            self.socks.append(s)
            return s

        self.sub = sock(zmq.SUB, pt["events_out"])
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.push = sock(zmq.PUSH, pt["jobs"])
        self.pub = sock(zmq.PUB, pt["events_in"])
        self.dealer = sock(zmq.DEALER, pt["workers"])
        self.dealer_in = self.dealer

    def received(self, seconds):
        got = []
        deadline = time.time() + seconds
        while time.time() < deadline:
            for s in (self.sub, self.dealer):
                try:
                    got.append(s.recv_multipart(zmq.NOBLOCK))
                except zmq.Again:
                    pass
            time.sleep(0.01)
        return got

    def close(self):
        self.ctx.destroy(linger=0)


def try_send(sock, frames):
    """Sends without waiting: with CURVE a refused peer never gets a connection, so PUSH and DEALER
    have nobody to send to (that is the point) and a blocking send would wait for ever."""
    try:
        sock.send_multipart(frames, zmq.NOBLOCK)
        return True
    except zmq.Again:
        return False


def live_requests(p, who, n, content):
    """Starts n streams for `who`, returns their threads, results and (once known) request ids."""
    client = client_for(p.gateways[0], who)
    results, ids = {}, []

    def one(i):
        with httpx.stream("POST", p.gateways[0] + who["base_path"] + "/chat/completions", timeout=60,
                          headers={"Authorization": f"Bearer {who['api_key']}"},
                          json={"model": "m", "stream": True, "max_tokens": 60, "messages": [{"role": "user", "content": f"{content} {i}"}]}) as r:
            ids.append(r.headers["x-request-id"])
            results[i] = r.read().decode()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    return threads, results, ids, client


def expected_stream(p, who, content, i):
    return stream_text(client_for(p.gateways[0], who), f"{content} {i}", max_tokens=60)


def sse_text(body):
    import json
    text = ""
    for line in body.splitlines():
        if line.startswith("data: {"):
            obj = json.loads(line[6:])
            assert "error" not in obj, obj
            for ch in obj.get("choices", []):
                text += ch["delta"].get("content") or ""
    assert body.rstrip().endswith("data: [DONE]"), body[-200:]
    return text


@pytest.mark.parametrize("curve", [False, True], ids=["plain-outsider", "curve-outsider"])
def test_an_outsider_on_every_port_receives_nothing_and_changes_nothing(fs, curve):
    o = Outsider(fs, curve)
    try:
        threads, results, ids, _ = live_requests(fs, fs.a, 6, f"outsider-{curve}")
        wait_for(lambda: len(ids) == 6, timeout=20, what="request ids")
        gw = fs.redis.cli("HGET", f"xero:job:{ids[0]}", "gateway")
        for rid in ids:
            topic = f"{gw}/{rid}".encode()
            try_send(o.push, [wire.encode_gateway_cancel(rid)])                              # cancel another client's request
            try_send(o.pub, [topic, wire.ev_delta(rid, 1, 1, 0, " INJECTED")])                # forge events
            try_send(o.pub, [topic, wire.ev_done(rid, 1, 2, 1, 1)])
        forged = wire.JobEnvelope(request_id="chatcmpl-forged1", reply_to="evil", tier="standard", project=fs.a["project_id"],
                                  endpoint="my-endpoint", model="demo-model", accepted_at_ms=int(time.time() * 1000),
                                  queue_deadline_ms=int(time.time() * 1000) + 60000, request_deadline_ms=int(time.time() * 1000) + 60000,
                                  payload=b'{"model":"m","messages":[{"role":"user","content":"free work"}]}')
        try_send(o.push, [wire.encode_gateway_submit(forged)])                               # submit past auth and billing
        try_send(o.dealer, [wire.hello("outsider", 64, 64)])                                 # pose as a worker
        got = o.received(2.0)
        for t in threads:
            t.join(60)
        assert got == [], f"the outsider received {len(got)} messages: {got[:3]}"
        for i in range(6):
            assert sse_text(results[i]) == expected_stream(fs, fs.a, f"outsider-{curve}", i), "a stream was changed"
        assert fs.redis.cli("EXISTS", "xero:job:chatcmpl-forged1") == "0", "a forged submit was queued"
        assert fs.redis.cli("ZSCORE", "xero:workers", "outsider") == ""
    finally:
        o.close()
    assert all(proc.poll() is None for proc in fs.procs.values())


class Agent:
    """A real agent of project B: its join key's CURVE keys; says hello serving * with 1,000 slots."""

    def __init__(self, p, join_key, wid="b-rogue"):
        self.ctx = zmq.Context()
        pub, sec = curve_keys_for(join_key)
        self.dealer = self.ctx.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.ROUTING_ID, wid.encode())
        self.xpub = self.ctx.socket(zmq.XPUB)
        for s in (self.dealer, self.xpub):
            s.setsockopt(zmq.LINGER, 0)
            s.curve_serverkey, s.curve_publickey, s.curve_secretkey = p.router_key.encode(), pub, sec
        pt = ports(p)
        self.dealer.connect(f"tcp://127.0.0.1:{pt['workers']}")
        self.xpub.connect(f"tcp://127.0.0.1:{pt['events_in']}")
        assert self.xpub.poll(5000), "the router's XSUB never subscribed: the agent's handshake failed"
        self.xpub.recv()
        self.dealer.send(wire.hello(wid, 1000, 1000))
        self.jobs = []

    def drain(self, seconds):
        deadline = time.time() + seconds
        while time.time() < deadline:
            if self.dealer.poll(20):
                self.jobs.append(wire.decode_router_message(self.dealer.recv()))

    def close(self):
        self.ctx.destroy(linger=0)


def test_another_projects_agent_cannot_touch_a_projects_streams(fs):
    jk = httpx.post(fs.gateways[0] + "/manage/v1/join-keys", headers={"Authorization": f"Bearer {fs.b['api_key']}"}, timeout=10,
                    json={"name": "rogue"}).json()
    agent = Agent(fs, jk["join_key"])
    try:
        wait_for(lambda: fs.redis.cli("HGET", "xero:worker:b-rogue", "fleet") == "project:" + fs.b["project_id"], what="rogue joined")
        threads, results, ids, _ = live_requests(fs, fs.a, 10, "victim")
        wait_for(lambda: len(ids) == 10, timeout=20, what="request ids")
        gw = fs.redis.cli("HGET", f"xero:job:{ids[0]}", "gateway")
        for rid in ids:
            topic = f"{gw}/{rid}".encode()
            for seq in range(0, 8):
                agent.xpub.send_multipart([topic, wire.ev_delta(rid, 1, seq, 0, " FORGED")])
            agent.xpub.send_multipart([topic, wire.ev_error(rid, 1, 8, 500, "forged")])
            agent.dealer.send(wire.started(rid))
            agent.dealer.send(wire.done(rid, 1, "done", 0, 0, 1, 1))
        agent.drain(1.0)
        for t in threads:
            t.join(60)
        for i in range(10):
            assert sse_text(results[i]) == expected_stream(fs, fs.a, "victim", i)
        assert [j for j in agent.jobs if j[0] == "job"] == [], "project B's agent was given project A's job"
        for rid in ids:
            assert fs.redis.cli("HGET", f"xero:job:{rid}", "worker") == "fs-w1"
        assert "events for a job the sender does not run dropped" in fs.log("router")
    finally:
        agent.close()


def test_revoking_a_streaming_workers_join_key_stops_its_traffic(fs):
    jk = httpx.post(fs.gateways[0] + "/manage/v1/join-keys", headers={"Authorization": f"Bearer {fs.admin}"}, timeout=10,
                    json={"name": "soon-revoked"}).json()
    fs.start_worker("doomed", "--sim-tpot-ms", "50", "--slots", "4", "--sim-answer-tokens", "400", join_key=jk["join_key"])
    # Only the doomed worker serves this project fleet… so the stream surely runs there.
    r = httpx.post(fs.gateways[0] + "/manage/v1/endpoints?project=" + fs.b["project_id"], headers={"Authorization": f"Bearer {fs.admin}"},
                   timeout=10, json={"slug": "plat-only", "model": "m", "fleet": "platform"})
    assert r.status_code == 200
    fs.stop("fs-w1")   # leave the doomed worker as the platform's only one
    try:
        base = fs.gateways[0] + fs.b["base_path"].replace("/my-endpoint/", "/plat-only/")
        events, revoked_at, ended_at = [], None, None
        with httpx.stream("POST", base + "/chat/completions", timeout=60, headers={"Authorization": f"Bearer {fs.b['api_key']}"},
                          json={"model": "m", "stream": True, "max_tokens": 400, "messages": [{"role": "user", "content": "long"}]}) as resp:
            for line in resp.iter_lines():
                if line.startswith("data: "):
                    events.append(line)
                if len(events) == 5 and revoked_at is None:
                    revoked_at = time.time()
                    rv = httpx.post(fs.gateways[0] + f"/manage/v1/join-keys/{jk['id']}/revoke", timeout=10,
                                    headers={"Authorization": f"Bearer {fs.admin}"})
                    assert rv.status_code == 200
            ended_at = time.time()
        assert revoked_at is not None
        # Its stream is migrated (docs/routing.md, "Mid-stream migration"), but no other platform
        # worker is left to continue it: it ends with an error, quickly, never more tokens from it.
        assert '"worker_lost"' in events[-1] or '"no_worker_available"' in events[-1], events[-1]
        # Stated bound: the routers re-check their workers' keys every 0.5 s (then the 2 s queue
        # timeout of the migrated job); generous for CI.
        assert ended_at - revoked_at < 5, ended_at - revoked_at
        wait_for(lambda: fs.redis.cli("ZSCORE", "xero:workers", "doomed") == "", timeout=10, what="doomed removed")
        assert "join key revoked: worker dropped" in fs.log("router")
    finally:
        fs.start_worker("fs-w1", "--sim-tpot-ms", "5", "--slots", "32")


def test_a_capture_of_the_fabric_shows_no_prompt_answer_or_join_key(fs, tmp_path):
    tcpdump = shutil.which("tcpdump")
    assert tcpdump, "scripts/setup.sh installs tcpdump"
    pcap = tmp_path / "fabric.pcap"
    base = fs.router_port
    cap = subprocess.Popen([tcpdump, "-i", "lo", "-U", "-s", "0", "-w", str(pcap), f"tcp portrange {base}-{base + 3}"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(1.0)
        jk = httpx.post(fs.gateways[0] + "/manage/v1/join-keys", headers={"Authorization": f"Bearer {fs.admin}"}, timeout=10,
                        json={"name": "captured"}).json()
        fs.start_worker("captured", "--sim-tpot-ms", "1", join_key=jk["join_key"])
        answer = stream_text(client_for(fs.gateways[0], fs.a), SECRET_PROMPT)
        assert SECRET_PROMPT in answer   # the simulator quotes the prompt back
        time.sleep(1.0)
    finally:
        cap.send_signal(signal.SIGINT)
        cap.wait(10)
        fs.stop("captured")
    data = pcap.read_bytes()
    assert len(data) > 10_000, "the capture saw the traffic"
    for secret in (SECRET_PROMPT.encode(), b"You said", jk["join_key"].encode(), jk["join_key"][6:].encode()):
        assert secret not in data, f"{secret!r} crossed the fabric in clear"


def test_a_draining_workers_last_events_still_reach_the_client(fs):
    """A worker told to stop finishes its job, then says done and bye on its control socket while its
    last events may still be on the events socket: the router must pass them (they are the job's
    own identity's), or the client would lose the end of its answer."""
    fs.start_worker("drainer", "--sim-tpot-ms", "2", "--slots", "8")
    fs.stop("fs-w1")
    try:
        results, running = {}, [threading.Event() for _ in range(8)]

        def one(i):
            with httpx.stream("POST", fs.gateways[0] + fs.a["base_path"] + "/chat/completions", timeout=60,
                              headers={"Authorization": f"Bearer {fs.a['api_key']}"},
                              json={"model": "m", "stream": True, "max_tokens": 400, "messages": [{"role": "user", "content": f"drain {i}"}]}) as r:
                chunks = []
                for chunk in r.iter_bytes():
                    chunks.append(chunk)
                    running[i].set()   # the job runs on the worker: draining must finish it
                results[i] = b"".join(chunks).decode()

        threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for e in running:
            assert e.wait(20), "a stream never started"
        fs.procs["drainer"].send_signal(signal.SIGTERM)
        for t in threads:
            t.join(60)
        assert fs.procs.pop("drainer").wait(30) == 0
        for i in range(8):
            assert results[i].rstrip().endswith("data: [DONE]"), results[i][-300:]
    finally:
        fs.start_worker("fs-w1", "--sim-tpot-ms", "5", "--slots", "32")
