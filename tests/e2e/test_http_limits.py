"""The gateway's HTTP bounds against hostile or broken clients, over raw sockets and httpx: idle and
slow connections are closed, a connection beyond the cap is refused in OpenAI's shape, oversized
headers and multipart abuse are refused, a client that stops reading has its job cancelled — and
through all of it the gateway stays up and serves normal requests."""
import json
import select
import socket
import subprocess
import time
from urllib.parse import urlparse

import httpx
import pytest

from conftest import BIN, Platform, client_for, wait_for

MAX_CONNECTIONS = 4
MAX_HEADER_BYTES = 8192


@pytest.fixture(scope="module")
def lp(redis, tmp_path_factory):
    """A router, a sim worker with endless answers, a gateway with small timeouts and header bound,
    and a second gateway with a small connection cap."""
    p = Platform(redis, tmp_path_factory.mktemp("limits"))
    p.start_router()
    p.start_worker("w-limits", "--sim-tpot-ms", "1", "--sim-answer-tokens", "1000000", "--slots", "8")
    p.tight = p.start_gateway("gw-tight", "--idle-timeout-seconds", "1", "--request-read-timeout-seconds", "2",
                              "--write-stall-seconds", "1", "--max-header-bytes", str(MAX_HEADER_BYTES))
    p.capped = p.start_gateway("gw-capped", "--max-connections", str(MAX_CONNECTIONS))
    p.demo = p.bootstrap()
    yield p
    p.shutdown()


def addr(url):
    u = urlparse(url)
    return u.hostname, u.port


def connect(url, rcvbuf=None):
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(15)
    s.connect(addr(url))
    return s


def read_response(s, timeout=15):
    """Reads until the server closes; returns (status, headers, body bytes)."""
    s.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        pass
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines[0].startswith("HTTP/") else None
    headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:] if ":" in l)}
    return status, headers, body


def get_health(s, host):
    """One keep-alive GET /health on an open socket; returns the status."""
    s.sendall(f"GET /health HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        assert chunk, "connection closed"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int([l for l in head.decode().split("\r\n") if l.lower().startswith("content-length:")][0].split(":")[1])
    while len(body) < length:
        body += s.recv(4096)
    return int(head.split()[1])


def assert_healthy(lp, url):
    assert httpx.get(url + "/health", timeout=10).status_code == 200
    c = client_for(url, lp.demo)
    r = c.chat.completions.create(model="m", messages=[{"role": "user", "content": "still here?"}], max_tokens=5)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 5


def auth(lp):
    return {"Authorization": f"Bearer {lp.demo['api_key']}"}


def test_max_body_bytes_over_the_wire_limit_is_refused_at_start(lp):
    out = subprocess.run([BIN, "gateway", "--max-body-bytes", str(64 * 1024 * 1024), "--redis", lp.redis.url],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert "--max-body-bytes" in out.stderr and str(32 * 1024 * 1024) in out.stderr


def test_idle_connection_is_closed_at_its_timeout(lp):
    s = connect(lp.tight)
    start = time.time()
    s.settimeout(15)
    assert s.recv(1) == b"", "the gateway closes a connection that never sends a request"
    assert 0.5 < time.time() - start < 10
    # After an answer the keep-alive connection is idle again, and closed again.
    s = connect(lp.tight)
    assert get_health(s, "x") == 200
    start = time.time()
    assert s.recv(1) == b""
    assert 0.5 < time.time() - start < 10


def test_slow_headers_are_bounded_by_the_idle_timeout(lp):
    s = connect(lp.tight)
    start = time.time()
    closed = False
    for b in b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
        try:
            s.send(bytes([b]))
        except OSError:
            closed = True
            break
        r, _, _ = select.select([s], [], [], 0.3)
        if r:
            closed = s.recv(4096) == b""
            break
    assert closed, "a request whose head never completes is closed"
    assert time.time() - start < 15


def test_slow_loris_body_gets_408_at_the_read_timeout(lp):
    s = connect(lp.tight)
    host, port = addr(lp.tight)
    path = lp.demo["base_path"] + "/chat/completions"
    s.sendall((f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {lp.demo['api_key']}\r\n"
               f"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n").encode())
    start = time.time()
    body = b'{"model":"m","messages":[{"role":"user","content":"' + b"x" * 1000
    for b in body:
        try:
            s.send(bytes([b]))
        except OSError:
            break
        r, _, _ = select.select([s], [], [], 0.3)
        if r:
            break
        assert time.time() - start < 20, "no answer to a dribbled body"
    status, headers, raw = read_response(s)
    elapsed = time.time() - start
    assert status == 408
    assert headers.get("content-type") == "application/json"
    err = json.loads(raw)["error"]
    assert err["code"] == "request_timeout" and err["type"] == "invalid_request_error" and err["param"] is None
    assert 1.5 < elapsed < 15
    assert_healthy(lp, lp.tight)


def test_connections_beyond_the_cap_get_503_and_slots_come_back(lp):
    host, _ = addr(lp.capped)
    held = [connect(lp.capped) for _ in range(MAX_CONNECTIONS)]
    for s in held:
        assert get_health(s, host) == 200
    # One more, sending nothing: answered at once.
    extra = connect(lp.capped)
    status, headers, body = read_response(extra, timeout=10)
    assert status == 503
    err = json.loads(body)["error"]
    assert err["code"] == "too_many_connections" and err["type"] == "service_unavailable"
    # And through an HTTP client sending a request.
    r = httpx.get(lp.capped + "/health", timeout=10)
    assert r.status_code == 503 and r.json()["error"]["code"] == "too_many_connections"
    # The first four are still served.
    for s in held:
        assert get_health(s, host) == 200
    for s in held:
        s.close()
    wait_for(lambda: httpx.get(lp.capped + "/health", timeout=5).status_code == 200, timeout=10, what="a slot freed")
    # All four slots are free again.
    # (The old connections' slots are released as their channels close, asynchronously: a fresh
    # set opened too early may meet a slot not yet freed, so each try opens a new set.)
    def four_again():
        again = [connect(lp.capped) for _ in range(MAX_CONNECTIONS)]
        try:
            return all(get_health(s, host) == 200 for s in again)
        finally:
            for s in again:
                s.close()
    wait_for(four_again, timeout=20, what="four connections again")
    wait_for(lambda: httpx.get(lp.capped + "/health", timeout=5).status_code == 200, timeout=10, what="slots after close")
    assert_healthy(lp, lp.capped)


def multipart(parts, boundary="xb0undary"):
    out = b""
    for name, value, filename in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + value + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return out, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def files_url(lp, gw):
    return gw + lp.demo["base_path"] + "/files"


def test_multipart_with_thousands_of_parts_is_refused(lp):
    line = json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}}).encode() + b"\n"
    parts = [("purpose", b"batch", None)] + [(f"f{i}", b"v", None) for i in range(5000)] + [("file", line, "in.jsonl")]
    body, headers = multipart(parts)
    r = httpx.post(files_url(lp, lp.capped), content=body, headers={**headers, **auth(lp)}, timeout=30)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "too_many_parts" and err["param"] == "file"
    # A few parts are fine.
    body, headers = multipart([("purpose", b"batch", None), ("file", line, "in.jsonl")])
    r = httpx.post(files_url(lp, lp.capped), content=body, headers={**headers, **auth(lp)}, timeout=30)
    assert r.status_code == 200 and r.json()["bytes"] == len(line)
    assert not list((lp.tmp / "files").rglob(".upload-*")), "refused uploads leave no temporary file"


def test_multipart_field_over_4_kib_is_refused_not_truncated(lp):
    body, headers = multipart([("purpose", b"batch" + b" " * 5000, None), ("file", b"{}\n", "in.jsonl")])
    r = httpx.post(files_url(lp, lp.capped), content=body, headers={**headers, **auth(lp)}, timeout=30)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "field_too_large" and err["param"] == "purpose" and "purpose" in err["message"]
    assert not list((lp.tmp / "files").rglob(".upload-*")), "refused uploads leave no temporary file"


def test_multipart_part_headers_are_bounded(lp):
    boundary = "hb0undary"
    pad = "".join(f"X-Pad-{i}: {'p' * 100}\r\n" for i in range(100))
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n{pad}\r\nbatch\r\n--{boundary}--\r\n").encode()
    r = httpx.post(files_url(lp, lp.capped), content=body,
                   headers={"Content-Type": f"multipart/form-data; boundary={boundary}", **auth(lp)}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == "part_headers_too_large"


@pytest.mark.parametrize("headers", [
    {"X-Big": "a" * (MAX_HEADER_BYTES + 100)},
    {f"X-Many-{i}": "v" for i in range(300)},
], ids=["one-big-field", "too-many-fields"])
def test_oversized_headers_get_431_and_the_gateway_stays_up(lp, headers):
    r = httpx.get(lp.tight + "/health", headers=headers, timeout=10)
    assert r.status_code == 431 and r.json()["error"]["code"] == "request_headers_too_large"
    assert_healthy(lp, lp.tight)


def test_client_that_stops_reading_is_closed_and_its_job_cancelled(lp):
    host, _ = addr(lp.tight)
    path = lp.demo["base_path"] + "/chat/completions"
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "long"}], "stream": True,
                       "max_tokens": 200000}).encode()
    # A small receive window so the gateway's socket fills quickly once nobody reads.
    s = connect(lp.tight, rcvbuf=4096)
    s.sendall((f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {lp.demo['api_key']}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body)
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 200")
    request_id = [l.split(b":", 1)[1].strip().decode() for l in head.split(b"\r\n") if l.lower().startswith(b"x-request-id:")][0]
    # Read nothing more: the gateway's buffers fill, the channel stays unwritable past the stall.
    deadline = time.time() + 60
    state = None
    while time.time() < deadline:
        state = lp.redis.cli("HGET", f"xero:job:{request_id}", "state")
        if state == "cancelled":
            break
        time.sleep(0.2)
    # Without the stall bound the job would run on to the tier's 30 s request timeout ("timeout").
    assert state == "cancelled", f"job state {state!r}"
    # The connection was closed by the gateway: draining it ends (EOF or reset), it does not stream forever.
    s.settimeout(15)
    drained = 0
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            drained += len(chunk)
            assert drained < 64 * 1024 * 1024
    except ConnectionResetError:
        pass
    s.close()
    assert "gateway starting" in lp.log("gw-tight")
    assert_healthy(lp, lp.tight)
