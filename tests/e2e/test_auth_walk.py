"""Authentication that a route cannot forget: walk the gateway's own route table and prove every
inference and management route refuses a call without a key, with a bad key, and with a key of the
wrong project or scope. Then the client address: X-Forwarded-For is believed only from
--trusted-proxy peers, so an IP allow-list cannot be fooled by a header."""
import re
import subprocess

import httpx
import pytest

from conftest import BIN, Platform


@pytest.fixture(scope="module")
def aw(redis, tmp_path_factory):
    p = Platform(redis, tmp_path_factory.mktemp("authwalk"))
    p.start_router()
    p.start_gateway()                                            # trusts nobody
    p.start_gateway(None, "--trusted-proxy", "127.0.0.1/32")     # a load balancer on loopback
    p.start_worker("aw-w1", "--sim-tpot-ms", "1")
    p.a = p.bootstrap(project="walk-a", scopes="inference,management")
    p.b = p.bootstrap(project="walk-b", scopes="inference")
    yield p
    p.shutdown()


def routes(p):
    out = subprocess.run([BIN, "gateway", "--config", str(p.config), "--redis", p.redis.url, "--router-port", str(p.router_port),
                          "--files-dir", str(p.tmp / "files"), "--print-routes"], capture_output=True, text=True, timeout=30, check=True)
    table = [tuple(line.split(" ", 1)) for line in out.stdout.splitlines() if line.strip()]
    assert len(table) > 25, table
    return table


def concrete(path, project):
    return re.sub(r"\{(\w+)\}", lambda m: {"project": "proj_" + project, "endpoint": "my-endpoint"}.get(m.group(1), "x1"), path)


# The console's pages anyone may load; every other console route needs a session (docs/console.md).
CONSOLE_PUBLIC = {("GET", "/"), ("GET", "/console/login"), ("GET", "/console/register")}


def test_every_route_but_health_refuses_an_unauthenticated_call(aw):
    table = routes(aw)
    assert ("GET", "/health") in table
    checked = 0
    for method, path in table:
        if path == "/health":
            continue
        if path == "/" or path.startswith("/console"):
            # Session routes: a page without a session sends to the log-in; a POST without the
            # CSRF cookie and field is refused before anything else (with a session or not).
            url = aw.gateways[0] + concrete(path, aw.a["project_id"])
            r = httpx.request(method, url, timeout=10, follow_redirects=False, data={"email": "a@b.example", "password": "x" * 12})
            if (method, path) in CONSOLE_PUBLIC:
                assert r.status_code == 200, (method, path, r.status_code)
            elif method == "GET":
                assert r.status_code == 303 and r.headers["location"] == "/console/login", (method, path, r.status_code)
            else:
                assert r.status_code == 403 and "expired" in r.text, (method, path, r.status_code, r.text[:200])
            checked += 1
            continue
        url = aw.gateways[0] + concrete(path, aw.a["project_id"])
        # Workers' model downloads take a router-issued token, not an API key (docs/models.md).
        internal = path.startswith("/internal/")
        for headers, status, code in [({}, 401, "missing_token" if internal else "missing_api_key"),
                                      ({"Authorization": "Bearer xero_walk-a_" + "z" * 32}, 401, "invalid_token" if internal else "invalid_api_key"),
                                      ({"Authorization": "Basic abc"}, 401, "missing_token" if internal else "invalid_api_key")]:
            r = httpx.request(method, url, headers=headers, json={}, timeout=10)
            assert r.status_code == status and r.json()["error"]["code"] == code, (method, path, headers, r.status_code, r.text)
        checked += 1
    assert checked == len(table) - 1


def test_inference_routes_refuse_another_projects_key_and_management_routes_an_inference_key(aw):
    for method, path in routes(aw):
        url = aw.gateways[0] + concrete(path, aw.a["project_id"])
        if path.startswith("/{project}"):
            r = httpx.request(method, url, headers={"Authorization": f"Bearer {aw.b['api_key']}"}, json={}, timeout=10)
            assert r.status_code == 403 and r.json()["error"]["code"] == "wrong_project", (method, path, r.text)
        elif path.startswith("/manage/v1"):
            r = httpx.request(method, url, headers={"Authorization": f"Bearer {aw.b['api_key']}"}, json={}, timeout=10)
            assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope", (method, path, r.text)
            if "/projects" in path:
                r = httpx.request(method, url, headers={"Authorization": f"Bearer {aw.a['api_key']}"}, json={}, timeout=10)
                assert r.status_code == 403, ("a management key is not the admin", method, path, r.text)


def allow_listed_key(aw, cidr):
    r = httpx.post(aw.gateways[0] + "/manage/v1/keys", headers={"Authorization": f"Bearer {aw.a['api_key']}"}, timeout=10,
                   json={"name": "office", "scopes": ["inference"], "allowed_ips": [cidr]})
    assert r.status_code == 200, r.text
    return r.json()["key"]


def models(gw, aw, key, xff=None):
    headers = {"Authorization": f"Bearer {key}"}
    if xff:
        headers["X-Forwarded-For"] = xff
    return httpx.get(gw + aw.a["base_path"] + "/models", headers=headers, timeout=10)


def test_forwarded_for_is_believed_only_from_a_trusted_proxy(aw):
    key = allow_listed_key(aw, "203.0.113.7/32")
    untrusting, trusting = aw.gateways[0], aw.gateways[1]
    # No proxy is trusted: the header is ignored, the peer (127.0.0.1) is not in the allow-list.
    r = models(untrusting, aw, key, xff="203.0.113.7")
    assert r.status_code == 403 and r.json()["error"]["code"] == "ip_not_allowed", r.text
    # Behind the trusted proxy the client is the right-most untrusted hop.
    assert models(trusting, aw, key, xff="203.0.113.7").status_code == 200
    assert models(trusting, aw, key, xff="198.51.100.1, 203.0.113.7").status_code == 200
    # A client cannot prepend its way in: the right-most untrusted hop is what counts.
    r = models(trusting, aw, key, xff="203.0.113.7, 198.51.100.1")
    assert r.status_code == 403, r.text
    # Without the header the trusted proxy itself is the client.
    assert models(trusting, aw, key).status_code == 403
    # Garbage in the header never becomes the client's address.
    assert models(trusting, aw, key, xff="203.0.113.7, not-an-ip").status_code == 403
