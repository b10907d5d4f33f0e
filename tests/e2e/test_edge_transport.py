"""Transport at the edges: HTTPS on the gateway (a test CA made here with the openssl CLI, the
real OpenAI SDK as the client) and Redis URLs with credentials (requirepass and a Redis 6+ ACL
user) under a whole platform."""
import socket
import ssl
import subprocess
import time
import warnings
from urllib.parse import urlparse

import httpx
import openai
import pytest

from conftest import BIN, Platform, Redis, client_for, wait_for


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A CA, and a server certificate it signed for 127.0.0.1 and localhost (SAN)."""
    d = tmp_path_factory.mktemp("certs")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=Xerotier Test CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr", cwd=d)
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
                                  "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
            "-extfile", "server.ext", "-out", "server.pem", cwd=d)
    # A key that belongs to no certificate here, for the mismatch case.
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "other.key", cwd=d)
    return d


@pytest.fixture(scope="module")
def tp(redis, certs, tmp_path_factory):
    """A router, a sim worker, an HTTPS gateway, and an HTTPS gateway with small limits."""
    p = Platform(redis, tmp_path_factory.mktemp("tls"))
    p.start_router()
    p.start_worker("w-tls", "--sim-tpot-ms", "1")
    p.tls = (certs / "server.pem", certs / "server.key", certs / "ca.pem")
    p.https = p.start_gateway("gw-https", tls=p.tls)
    p.tight = p.start_gateway("gw-https-tight", "--idle-timeout-seconds", "1", "--max-connections", "3",
                              "--max-header-bytes", "8192", tls=p.tls)
    p.demo = p.bootstrap()
    p.ca = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    yield p
    p.shutdown()


def trusted(tp, url):
    """The OpenAI SDK through an httpx client that trusts the test CA (and nothing else)."""
    return client_for(url, tp.demo, http_client=httpx.Client(verify=tp.ca, timeout=60))


def addr(url):
    u = urlparse(url)
    return u.hostname, u.port


def tls_socket(tp, url, alpn=None):
    ctx = ssl.create_default_context(cafile=str(tp.tls[2]))
    if alpn:
        ctx.set_alpn_protocols(alpn)
    raw = socket.create_connection(addr(url), timeout=15)
    return ctx.wrap_socket(raw, server_hostname="127.0.0.1")


def still_serving(tp, url):
    assert httpx.get(url + "/health", verify=tp.ca, timeout=10).status_code == 200
    r = trusted(tp, url).chat.completions.create(model="m", messages=[{"role": "user", "content": "still there?"}], max_tokens=3)
    assert r.usage.completion_tokens == 3


def test_chat_over_https_with_the_openai_sdk(tp):
    assert tp.https.startswith("https://127.0.0.1:")
    c = trusted(tp, tp.https)
    r = c.chat.completions.create(model="demo-model", messages=[{"role": "user", "content": "Hello over TLS"}], max_tokens=8)
    assert r.choices[0].message.content and r.usage.completion_tokens == 8
    stream = c.chat.completions.create(model="demo-model", messages=[{"role": "user", "content": "Stream over TLS"}],
                                       max_tokens=12, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text
    assert chunks[-1].usage.completion_tokens == 12
    assert [m.id for m in c.models.list().data] == ["demo-model"]


def test_https_by_name_localhost_and_alpn_http11_tls12_plus(tp):
    # The certificate names localhost too (SAN DNS), and the SDK accepts it by that name.
    port = addr(tp.https)[1]
    r = client_for(f"https://localhost:{port}", tp.demo, http_client=httpx.Client(verify=tp.ca)).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert r.usage.completion_tokens == 2
    # HTTP/1.1 is the only protocol offered, even to a client that prefers h2; TLS 1.2 or newer.
    s = tls_socket(tp, tp.https, alpn=["h2", "http/1.1"])
    assert s.selected_alpn_protocol() == "http/1.1"
    assert s.version() in ("TLSv1.2", "TLSv1.3")
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    assert data.startswith(b"HTTP/1.1 200")
    s.close()


def test_tls_1_1_is_refused(tp):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(tp.tls[2]))
    try:
        # A client offering at most TLS 1.1 (Python still sends such a ClientHello; the refusal is the gateway's).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        pytest.skip("this Python's OpenSSL cannot offer TLS 1.1 at all")
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        with socket.create_connection(addr(tp.https), timeout=10) as raw:
            ctx.wrap_socket(raw, server_hostname="127.0.0.1").do_handshake()
    still_serving(tp, tp.https)


def test_a_client_that_does_not_trust_the_ca_fails_verification(tp):
    # The SDK's default client trusts the system roots (certifi), which do not hold the test CA.
    c = client_for(tp.https, tp.demo)
    with pytest.raises(openai.APIConnectionError) as e:
        c.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    cause = e.value.__cause__
    while cause is not None and not isinstance(cause, ssl.SSLCertVerificationError):
        cause = cause.__cause__ or cause.__context__
    assert isinstance(cause, ssl.SSLCertVerificationError), repr(e.value.__cause__)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(tp.https + "/health", timeout=10)
    still_serving(tp, tp.https)


def test_plain_http_to_the_tls_port_fails_and_the_gateway_stays_up(tp):
    plain = tp.https.replace("https://", "http://")
    with pytest.raises(httpx.HTTPError):
        httpx.get(plain + "/health", timeout=10)
    with pytest.raises(openai.APIConnectionError):
        client_for(plain, tp.demo).chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    # On a raw socket: never an HTTP answer, and the connection is closed.
    with socket.create_connection(addr(tp.https), timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        try:
            while chunk := s.recv(4096):
                data += chunk
        except ConnectionResetError:
            pass
        assert not data.startswith(b"HTTP/")
    still_serving(tp, tp.https)


def test_http_limits_hold_over_tls(tp):
    # Idle timeout: a TLS connection that never sends a request is closed.
    s = tls_socket(tp, tp.tight)
    start = time.time()
    assert s.recv(1) == b""
    assert 0.5 < time.time() - start < 10
    s.close()
    # A connection that never even finishes its handshake is closed too.
    with socket.create_connection(addr(tp.tight), timeout=15) as raw:
        start = time.time()
        try:
            assert raw.recv(1) == b""
        except ConnectionResetError:
            pass
        assert time.time() - start < 10
    # Header bound: 431 over TLS.
    r = httpx.get(tp.tight + "/health", headers={"x-big": "a" * 9000}, verify=tp.ca, timeout=10)
    assert r.status_code == 431
    # Connection cap: three held, the fourth gets 503 too_many_connections, through TLS. A
    # connection the gateway closed (the idle ones above) gives its slot back once the client
    # answers close_notify or the 1 s TLS shutdown timeout passes.
    held = []

    def hold_three():
        for h in held:
            h.close()
        held[:] = [tls_socket(tp, tp.tight) for _ in range(3)]
        for h in held:
            h.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        return all(h.recv(4096).startswith(b"HTTP/1.1 200") for h in held)
    wait_for(hold_three, timeout=10, what="three TLS connections served")
    r = httpx.get(tp.tight + "/health", verify=tp.ca, timeout=10)
    assert r.status_code == 503 and r.json()["error"]["code"] == "too_many_connections"
    for h in held:
        h.close()
    wait_for(lambda: httpx.get(tp.tight + "/health", verify=tp.ca, timeout=5).status_code == 200, timeout=10, what="slots back")
    still_serving(tp, tp.tight)


def run_gateway(tp, *args):
    return subprocess.run([BIN, "gateway", "--redis", tp.redis.url, "--config", str(tp.config), "--port", "1",
                           "--router-port", str(tp.router_port), *args], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("case", ["missing-cert", "missing-key", "garbage-cert", "key-as-cert", "mismatch", "cert-only", "key-only"])
def test_bad_tls_files_stop_the_gateway_naming_the_file(tp, certs, case):
    garbage = certs / "garbage.pem"
    garbage.write_text("this is not PEM\n")
    cert, key = str(certs / "server.pem"), str(certs / "server.key")
    args, named = {
        "missing-cert": (["--tls-cert", str(certs / "nope.pem"), "--tls-key", key], str(certs / "nope.pem")),
        "missing-key": (["--tls-cert", cert, "--tls-key", str(certs / "nope.key")], str(certs / "nope.key")),
        "garbage-cert": (["--tls-cert", str(garbage), "--tls-key", key], str(garbage)),
        "key-as-cert": (["--tls-cert", key, "--tls-key", key], "--tls-cert " + key),
        "mismatch": (["--tls-cert", cert, "--tls-key", str(certs / "other.key")], str(certs / "other.key")),
        "cert-only": (["--tls-cert", cert], "--tls-key"),
        "key-only": (["--tls-key", key], "--tls-cert"),
    }[case]
    out = run_gateway(tp, *args)
    assert out.returncode != 0
    assert named in out.stderr, out.stderr


# Redis with credentials: a whole platform on it.

def whole_platform_answers(r, tmp):
    p = Platform(r, tmp)  # runs `admin create-join-key` against the URL with credentials
    try:
        p.start_router()
        gw = p.start_gateway()
        p.start_worker("w-auth", "--sim-tpot-ms", "1")
        demo = p.bootstrap()
        c = client_for(gw, demo)
        res = c.chat.completions.create(model="m", messages=[{"role": "user", "content": "hello"}], max_tokens=4)
        assert res.usage.completion_tokens == 4
        chunks = list(c.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=4, stream=True))
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        # The router's ops recorder writes through its own authenticated connection.
        wait_for(lambda: r.cli("ZSCORE", "xero:workers", "w-auth") != "", what="worker recorded")
        for name in ("router", "gateway-1"):
            assert r.password not in p.log(name)
    finally:
        p.shutdown()


def test_platform_on_a_redis_with_requirepass(tmp_path):
    r = Redis(tmp_path, password="pa:ss@w/rd %")
    try:
        assert r.url.startswith("redis://:pa%3Ass%40w%2Frd%20%25@127.0.0.1:")
        assert r.cli("PING") == "PONG"
        whole_platform_answers(r, tmp_path)
    finally:
        r.stop()


def test_platform_on_a_redis_acl_user(tmp_path):
    r = Redis(tmp_path, password="s3cret", user="alice")
    try:
        assert r.url.startswith("redis://alice:s3cret@127.0.0.1:")
        # The default user is off: without alice nothing works.
        out = subprocess.run(["redis-cli", "-p", str(r.port), "PING"], capture_output=True, text=True, timeout=10)
        assert "NOAUTH" in out.stdout + out.stderr
        whole_platform_answers(r, tmp_path)
    finally:
        r.stop()


@pytest.mark.parametrize("user", [None, "alice"])
def test_a_wrong_redis_password_stops_every_process_at_start(tmp_path, user):
    r = Redis(tmp_path, password="right-one", user=user)
    try:
        prefix = f"redis://{user or ''}"
        wrong = f"{prefix}:wr0ng-pw@127.0.0.1:{r.port}"
        none = f"redis://127.0.0.1:{r.port}"
        config = tmp_path / "xerotier.yaml"
        from conftest import TEST_CONFIG
        config.write_text(TEST_CONFIG)
        commands = {
            "router": ["router", "--config", str(config), "--router-port", "1", "--redis"],
            "gateway": ["gateway", "--config", str(config), "--port", "1", "--redis"],
            "bootstrap": ["admin", "bootstrap", "--project-slug", "p", "--endpoint-slug", "e", "--model", "m", "--redis"],
            "join-key": ["admin", "create-join-key", "--redis"],
        }
        for name, cmd in commands.items():
            out = subprocess.run([BIN, *cmd, wrong], capture_output=True, text=True, timeout=30)
            assert out.returncode != 0, name
            assert f"{prefix}:***@127.0.0.1:{r.port}/0" in out.stderr, (name, out.stderr)
            assert "WRONGPASS" in out.stderr, (name, out.stderr)
            assert "wr0ng-pw" not in out.stdout + out.stderr, (name, out.stderr)
            # No credentials at all: refused at start too, saying credentials are needed.
            out = subprocess.run([BIN, *cmd, none], capture_output=True, text=True, timeout=30)
            assert out.returncode != 0 and "NOAUTH" in out.stderr, (name, out.stderr)
        # A URL outside the grammar is refused before anything connects, without echoing the password.
        out = subprocess.run([BIN, "admin", "create-join-key", "--redis", f"redis://:wr0ng-pw@127.0.0.1:{r.port}/zero"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode != 0 and "not a non-negative integer" in out.stderr and "wr0ng-pw" not in out.stderr
        # Sentinels that cannot be reached: a clear error naming each one, never the password.
        out = subprocess.run([BIN, "admin", "create-join-key", "--redis", "redis+sentinel://:s3cret@127.0.0.1:9,127.0.0.1:10/mymaster"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode != 0 and "no Sentinel of" in out.stderr and "127.0.0.1:10" in out.stderr, out.stderr
        assert "s3cret" not in out.stderr
    finally:
        r.stop()
