"""The model registry end to end: `xeroctl models upload` of the shipped SmolLM2 GGUF (interrupted
half-way, then resumed), refusals of files the engine cannot run, workers started with `--model NAME`
and `--models auto` fetching the file from a gateway with a router-issued token, and answers through
the OpenAI SDK. A Redis of its own: registry names are one namespace, and platform models would show
in other tests' model lists."""
import hashlib
import json
import os
import subprocess
import time

import httpx
import pytest
import zmq

import wire
from conftest import BIN, BUILTIN_MODEL as MODEL, Platform, Redis, client_for, curve_keys_for, require_builtin_model

XEROCTL = str(BIN).replace("xerotier", "xeroctl")
SEED = [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def reg(tmp_path_factory):
    require_builtin_model()
    tmp = tmp_path_factory.mktemp("registry")
    redis = Redis(tmp)
    p = Platform(redis, tmp)
    p.start_router()
    p.gateway = p.start_gateway()
    p.owner = p.bootstrap(project="owner", endpoint="served", model="smol-copy", scopes="inference,management")
    p.other = p.bootstrap(project="other", endpoint="theirs", model="other-model", scopes="inference,management")
    p.env = {**os.environ, "XDG_CACHE_HOME": str(tmp / "xeroctl-cache"), "XEROCTL_BASE_URL": p.gateway}
    p.sha = hashlib.sha256(MODEL.read_bytes()).hexdigest()
    p.tmp = tmp
    yield p
    p.shutdown()
    redis.stop()


def xeroctl(p, key, *args, check=True):
    out = subprocess.run([XEROCTL, *args, "--key", key], capture_output=True, text=True, timeout=120, env=p.env)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def manage(p, key, method, path, headers=None, **kw):
    return httpx.request(method, p.gateway + "/manage/v1" + path, headers={"Authorization": f"Bearer {key}", **(headers or {})}, timeout=60, **kw)


def test_an_interrupted_upload_resumes_and_records_what_the_file_is(reg):
    key = reg.owner["api_key"]
    cut = xeroctl(reg, key, "models", "upload", str(MODEL), "--name", "smol-copy", "--part-mb", "16", "--stop-after-parts", "3", check=False)
    assert cut.returncode != 0 and "run the same command again to resume" in cut.stderr
    assert "%" in cut.stderr    # the progress bar
    state = json.loads(next((reg.tmp / "xeroctl-cache/xerotier/uploads").glob("*.json")).read_text())
    upload = manage(reg, key, "GET", f"/uploads/{state['uploadId']}").json()
    assert upload["status"] == "pending" and len(upload["parts"]) == 3 and upload["received_bytes"] == 3 * 16 << 20
    done = xeroctl(reg, key, "models", "upload", str(MODEL), "--name", "smol-copy", "--part-mb", "16", "--json")
    parts = (MODEL.stat().st_size + (16 << 20) - 1) // (16 << 20)
    assert f"resuming {state['uploadId']}: 3 of {parts} parts already there" in done.stderr
    model = json.loads(done.stdout)
    assert model["sha256"] == reg.sha and model["bytes"] == MODEL.stat().st_size
    assert model["architecture"] == "llama" and "q4_1" in model["tensor_types"]
    assert 100e6 < model["parameters"] < 200e6 and model["context_length"] >= 2048
    assert manage(reg, key, "GET", f"/uploads/{state['uploadId']}").json()["status"] == "completed"
    listed = json.loads(xeroctl(reg, key, "models", "list", "--json").stdout)["data"]
    assert [(m["id"], m["owned_by"]) for m in listed] == [("smol-copy", reg.owner["project_id"])]
    table = xeroctl(reg, key, "models", "show", "smol-copy").stdout
    assert "llama" in table and reg.sha in table
    # Another project does not see it, and cannot take its name.
    assert manage(reg, reg.other["api_key"], "GET", "/models/smol-copy").status_code == 404
    assert json.loads(xeroctl(reg, reg.other["api_key"], "models", "list", "--json").stdout)["data"] == []


def upload_bytes(p, key, data, name, sha=None):
    """One upload through the API: create, one part, complete. Returns the completion's response."""
    u = manage(p, key, "POST", "/uploads", json={"purpose": "model", "filename": name + ".gguf", "bytes": len(data),
                                                 "sha256": sha or hashlib.sha256(data).hexdigest()})
    assert u.status_code == 200, u.text
    part = manage(p, key, "POST", f"/uploads/{u.json()['id']}/parts", content=data, headers={"Content-Type": "application/octet-stream"})
    assert part.status_code == 200, part.text
    return manage(p, key, "POST", f"/uploads/{u.json()['id']}/complete", json={"part_ids": [part.json()["id"]], "name": name})


def test_files_the_engine_cannot_run_are_refused_with_the_reason(reg):
    key = reg.other["api_key"]
    head = MODEL.read_bytes()[:1_000_000]
    r = upload_bytes(reg, key, head, "cut-model")
    assert r.status_code == 400 and r.json()["error"]["code"] == "unsupported_model" and "truncated" in r.json()["error"]["message"]
    r = upload_bytes(reg, key, b"not a model at all" * 100, "junk-model")
    assert r.status_code == 400 and "not a GGUF file" in r.json()["error"]["message"]
    r = upload_bytes(reg, key, b"GGUF" + b"\0" * 60, "lying-model", sha="0" * 64)
    assert r.status_code == 400 and r.json()["error"]["code"] == "sha256_mismatch"
    assert manage(reg, key, "GET", "/models/cut-model").status_code == 404
    # Names are one namespace; bad names, sizes and parts are refused before any byte is kept.
    r = upload_bytes(reg, key, head, "smol-copy")
    assert r.status_code == 409
    u = manage(reg, key, "POST", "/uploads", json={"purpose": "model", "filename": "x", "bytes": 10, "sha256": "a" * 64}).json()
    too_big = manage(reg, key, "POST", f"/uploads/{u['id']}/parts", content=b"x" * 11)
    assert too_big.status_code == 400
    for body in ({"purpose": "batch", "filename": "x", "bytes": 1, "sha256": "a" * 64},
                 {"purpose": "model", "filename": "x", "bytes": -1, "sha256": "a" * 64},
                 {"purpose": "model", "filename": "x", "bytes": 1, "sha256": "nothex"}):
        assert manage(reg, key, "POST", "/uploads", json=body).status_code == 400, body
    bad_name = manage(reg, key, "POST", f"/uploads/{u['id']}/complete", json={"part_ids": [], "name": "x"})
    assert bad_name.status_code == 400
    # Another project's upload does not exist for you.
    assert manage(reg, reg.owner["api_key"], "GET", f"/uploads/{u['id']}").status_code == 404
    assert manage(reg, key, "POST", f"/uploads/{u['id']}/cancel").json()["status"] == "cancelled"


def fabric_request(p, join_key, name):
    """A modelRequest on a CURVE connection of the given join key, as a worker's fetcher sends it."""
    ctx = zmq.Context()
    try:
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        public, secret = curve_keys_for(join_key)
        s.curve_serverkey, s.curve_publickey, s.curve_secretkey = p.router_key.encode(), public, secret
        s.connect(f"tcp://127.0.0.1:{p.router_port + 1}")
        s.send(wire.model_request(name))
        assert s.poll(10_000), "no answer from the router"
        return wire.decode_router_message(s.recv())
    finally:
        ctx.destroy(0)


def test_downloads_need_a_router_token_for_that_model(reg):
    url = reg.gateway + "/internal/v1/models/smol-copy/content"
    assert httpx.get(url).status_code == 401
    for credential in ("xmt_" + "a" * 40, reg.join_key, reg.owner["api_key"]):
        assert httpx.get(url, headers={"Authorization": f"Bearer {credential}"}).status_code == 401, credential
    kind, grant = fabric_request(reg, reg.join_key, "smol-copy")
    assert kind == "model_grant" and grant["sha256"] == reg.sha and grant["bytes"] == MODEL.stat().st_size
    auth = {"Authorization": f"Bearer {grant['token']}"}
    assert httpx.get(reg.gateway + "/internal/v1/models/other-model/content", headers=auth).status_code == 403
    tail = httpx.get(url, headers={**auth, "Range": f"bytes={grant['bytes'] - 10}-"})
    assert tail.status_code == 206 and tail.content == MODEL.read_bytes()[-10:]
    # A project's agent sees only its project's models (and the platform's): another project's
    # model answers like a missing one.
    other_agent = subprocess.run([BIN, "admin", "create-join-key", "--redis", reg.redis.url, "--project-slug", "other"],
                                 capture_output=True, text=True, check=True).stdout.strip()
    kind, (name, reason) = fabric_request(reg, other_agent, "smol-copy")
    assert kind == "model_refused" and "no model 'smol-copy'" in reason
    kind, (_, reason) = fabric_request(reg, other_agent, "auto")
    assert kind == "model_refused" and "names a registry model" in reason
    # Nobody's token was logged.
    assert "xmt_" not in reg.log("router") + reg.log("gateway-1")


def test_workers_fetch_the_model_and_answer(reg):
    """A platform worker started with --model, and a project agent with --models auto, each fetch
    the file, check it, and serve it: the SDK gets answers from both."""
    reg.start_worker("fetched", "--engine", "gguf", "--model", "smol-copy", "--model-source", reg.gateway,
                     "--model-cache", str(reg.tmp / "cache-1"), "--slots", "2")
    assert (reg.tmp / f"cache-1/{reg.sha}.gguf").exists()
    client = client_for(reg.gateway, reg.owner, timeout=120)
    r = client.chat.completions.create(model="smol-copy", messages=SEED, max_tokens=24, temperature=0)
    assert "Paris" in r.choices[0].message.content
    reg.stop("fetched")
    # A project agent: only its project's endpoints, and `auto` picks the model they name.
    agent_key = subprocess.run([BIN, "admin", "create-join-key", "--redis", reg.redis.url, "--project-slug", "owner"],
                               capture_output=True, text=True, check=True).stdout.strip()
    own = reg.bootstrap(project="owner", endpoint="agents-only", model="smol-copy", scopes="inference")
    manage(reg, reg.owner["api_key"], "PATCH", "/endpoints/agents-only", json={"fleet": "project"}).raise_for_status()
    reg.start_worker("agent", "--engine", "gguf", "--models", "auto", "--model-source", reg.gateway,
                     "--model-cache", str(reg.tmp / "cache-2"), "--slots", "2", join_key=agent_key)
    assert "model ready" in reg.log("agent") and "smol-copy" in reg.log("agent")
    r = client_for(reg.gateway, own, timeout=120).chat.completions.create(model="m", messages=SEED, max_tokens=24, temperature=0)
    assert "Paris" in r.choices[0].message.content
    # The catalog lists the registry's models beside the endpoint's own.
    other_client = client_for(reg.gateway, reg.other)
    assert [m.id for m in other_client.models.list().data] == ["other-model"]
    assert [m.id for m in client.models.list().data] == ["smol-copy"]
    reg.stop("agent")
    # A second start finds the file in its cache: no download (its model source is unreachable).
    reg.start_worker("again", "--engine", "gguf", "--model", "smol-copy", "--model-source", "http://127.0.0.1:9",
                     "--model-cache", str(reg.tmp / "cache-1"), "--slots", "1")
    assert reg.stop("again") == 0


def test_deleting_a_model(reg):
    key = reg.owner["api_key"]
    assert manage(reg, reg.other["api_key"], "DELETE", "/models/smol-copy").status_code == 404
    assert xeroctl(reg, key, "models", "delete", "smol-copy").stdout.strip() == "deleted smol-copy"
    assert manage(reg, key, "GET", "/models/smol-copy").status_code == 404
    kind, _ = fabric_request(reg, reg.join_key, "smol-copy")
    assert kind == "model_refused"
