"""Agents belong to their project (or to the platform): a tenant's agent receives only its own
project's jobs, an endpoint says which fleet serves it, a project sees only its own agents, and join
keys from before fleets existed migrate safely. Real router, gateway, workers (the simulator) and Redis."""
import subprocess
import time

import httpx
import pytest

from conftest import BIN, Platform, curve_keys_for, wait_for


@pytest.fixture(scope="module")
def fp(redis, tmp_path_factory):
    p = Platform(redis, tmp_path_factory.mktemp("fleets"))
    p.start_router()
    p.start_gateway()
    p.start_worker("plat-1", "--sim-tpot-ms", "1", "--slots", "4")
    p.a = p.bootstrap(project="fleet-a", scopes="inference,management")
    p.b = p.bootstrap(project="fleet-b", scopes="inference,management")
    p.admin = p.create_admin_key()
    # Project B brings its own agent, many slots, serving any model: it must still see only B's jobs.
    jk = manage(p, p.b, "POST", "/join-keys", json={"name": "b-agents"}).json()
    assert jk["fleet"] == "project:" + p.b["project_id"]
    p.start_worker("b-agent", "--sim-tpot-ms", "1", "--slots", "64", join_key=jk["join_key"])
    yield p
    p.shutdown()


def manage(p, who, method, path, key=None, **kw):
    return httpx.request(method, p.gateways[0] + "/manage/v1" + path, timeout=30,
                         headers={"Authorization": f"Bearer {key or who['api_key']}"}, **kw)


def ask(p, who, endpoint="my-endpoint", n=1):
    workers = []
    base = p.gateways[0] + who["base_path"].replace("/my-endpoint/", f"/{endpoint}/")
    for i in range(n):
        r = httpx.post(base + "/chat/completions", timeout=30, headers={"Authorization": f"Bearer {who['api_key']}"},
                       json={"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": f"q{i}"}]})
        if r.status_code != 200:
            workers.append(r.status_code)
            continue
        rid = r.headers["x-request-id"]
        wait_for(lambda: p.redis.cli("HGET", f"xero:job:{rid}", "worker") != "", timeout=10, what="job record")
        workers.append(p.redis.cli("HGET", f"xero:job:{rid}", "worker"))
    return workers


def test_a_projects_requests_are_never_served_by_another_projects_agent(fp):
    served = ask(fp, fp.a, n=20)
    assert served == ["plat-1"] * 20, served


def test_an_endpoint_on_its_projects_fleet_runs_on_its_own_agents_only(fp):
    r = manage(fp, fp.b, "POST", "/endpoints", json={"slug": "own", "model": "m", "fleet": "project"})
    assert r.status_code == 200 and r.json()["fleet"] == "project", r.text
    assert ask(fp, fp.b, "own", n=8) == ["b-agent"] * 8
    r = manage(fp, fp.b, "POST", "/endpoints", json={"slug": "plat", "model": "m", "fleet": "platform"})
    assert r.status_code == 200
    assert ask(fp, fp.b, "plat", n=8) == ["plat-1"] * 8
    # Both (the default) may use either.
    assert set(ask(fp, fp.b, n=10)) <= {"plat-1", "b-agent"}


def test_a_project_fleet_endpoint_without_agents_waits_then_503(fp):
    r = manage(fp, fp.a, "POST", "/endpoints", json={"slug": "own", "model": "m", "fleet": "project"})
    assert r.status_code == 200
    assert ask(fp, fp.a, "own") == [503], "B's agent and the platform worker must not take it"


def test_bad_fleet_is_a_400(fp):
    for value, code in [("everyone", "invalid_value"), (3, "invalid_type")]:
        r = manage(fp, fp.a, "POST", "/endpoints", json={"slug": "x", "model": "m", "fleet": value})
        assert r.status_code == 400 and r.json()["error"]["param"] == "fleet" and r.json()["error"]["code"] == code, r.text


def test_a_project_sees_only_its_own_agents_and_the_admin_sees_all(fp):
    ids = lambda r: sorted(w["id"] for w in r.json()["data"])
    assert ids(manage(fp, fp.b, "GET", "/agents")) == ["b-agent"]
    assert ids(manage(fp, fp.a, "GET", "/agents")) == []
    everyone = manage(fp, None, "GET", "/agents", key=fp.admin).json()["data"]
    fleets = {w["id"]: w.get("fleet") for w in everyone}
    assert fleets["plat-1"] == "platform" and fleets["b-agent"] == "project:" + fp.b["project_id"]
    # The admin's join keys are platform keys; a project's list shows only its own.
    jk = manage(fp, None, "POST", "/join-keys", key=fp.admin, json={"name": "fleet"}).json()
    assert jk["fleet"] == "platform"
    assert jk["id"] not in manage(fp, fp.b, "GET", "/join-keys").text


def legacy_join_key(fp, key, project, with_curve=True):
    """A join key record as older versions wrote it: only a `project`, no `fleet`. With CURVE the
    record also needs the public key derived from the key (older records cannot have it, since only
    the key's hash is stored: such keys are refused at the handshake and must be re-issued)."""
    import hashlib
    h = hashlib.sha256(key.encode()).hexdigest()
    fp.redis.cli("HSET", f"xero:joinkey:{h}", "id", "jk_" + key[-6:], "project", project, "name", "old", "created_at", "0", "revoked", "0")
    if with_curve:
        fp.redis.cli("SET", "xero:curve:" + curve_keys_for(key)[0].decode(), h)


def test_join_keys_from_before_fleets_migrate_safely(fp):
    """A record with only a `project`: a tenant project's key stays that tenant's; the `system`
    project's (what `admin create-join-key` used to make) becomes a platform key."""
    a_id = fp.a["project_id"]
    legacy = "xjoin_" + "l" * 32
    legacy_join_key(fp, legacy, a_id)
    fp.start_worker("a-legacy", "--sim-tpot-ms", "1", "--slots", "8", join_key=legacy)
    wait_for(lambda: fp.redis.cli("HGET", "xero:worker:a-legacy", "fleet") != "", what="fleet recorded")
    assert fp.redis.cli("HGET", "xero:worker:a-legacy", "fleet") == f"project:{a_id}"
    assert ask(fp, fp.a, "own", n=4) == ["a-legacy"] * 4
    assert "a-legacy" not in ask(fp, fp.b, n=12)
    fp.stop("a-legacy")
    system = subprocess.run([BIN, "admin", "bootstrap", "--redis", fp.redis.url, "--project-slug", "system", "--endpoint-slug", "x",
                             "--model", "m", "--json"], capture_output=True, text=True, check=True, timeout=30)
    import json
    sys_id = json.loads(system.stdout)["project_id"]
    legacy2 = "xjoin_" + "s" * 32
    legacy_join_key(fp, legacy2, sys_id)
    fp.start_worker("sys-legacy", "--sim-tpot-ms", "1", "--slots", "2", join_key=legacy2)
    wait_for(lambda: fp.redis.cli("HGET", "xero:worker:sys-legacy", "fleet") != "", what="fleet recorded")
    assert fp.redis.cli("HGET", "xero:worker:sys-legacy", "fleet") == "platform"


def test_a_join_key_without_a_recorded_curve_key_is_refused_at_the_handshake(fp):
    old = "xjoin_" + "o" * 32
    legacy_join_key(fp, old, fp.a["project_id"], with_curve=False)
    fp.start_worker("no-curve", "--sim-tpot-ms", "1", join_key=old, wait=False)
    time.sleep(3)
    assert fp.redis.cli("ZSCORE", "xero:workers", "no-curve") == "", "a key the routers cannot check must not join"
