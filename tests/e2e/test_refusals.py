"""Every refusal, with the status and OpenAI error body it must carry, through the real gateway."""
import json

import httpx
import openai
import pytest

from conftest import client_for


def error_of(resp):
    body = resp.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def post(platform, path=None, key=None, body=None, raw=None, headers=None):
    url = platform.gateways[0] + (path or platform.demo["base_path"] + "/chat/completions")
    h = dict(headers or {})
    if key is not None:
        h["Authorization"] = f"Bearer {key}"
    if raw is not None:
        return httpx.post(url, content=raw, headers={"Content-Type": "application/json", **h}, timeout=30)
    return httpx.post(url, json=body or {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, headers=h, timeout=30)


def test_no_key_is_401(platform):
    r = post(platform)
    assert r.status_code == 401
    assert error_of(r)["code"] == "missing_api_key"
    # The SDK insists on a key; blank out the header it would send.
    with pytest.raises(openai.AuthenticationError) as e:
        client_for(platform.gateways[0], platform.demo, default_headers={"Authorization": ""}).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["code"] == "missing_api_key"


@pytest.mark.parametrize("key", ["not-a-key", "xero_demo_short", "sk-" + "a" * 40, "Basic abc"])
def test_malformed_key_is_401(platform, key):
    r = post(platform, key=key)
    assert r.status_code == 401
    assert error_of(r)["code"] == "invalid_api_key"


def test_unknown_key_is_401_via_sdk(platform):
    with pytest.raises(openai.AuthenticationError) as e:
        client_for(platform.gateways[0], {**platform.demo, "api_key": "xero_demo_" + "z" * 32}).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 401
    assert e.value.body["code"] == "invalid_api_key"


def test_key_of_another_project_is_403(platform):
    other = platform.bootstrap(project="other-team", endpoint="ep", model="m2")
    with pytest.raises(openai.PermissionDeniedError) as e:
        client_for(platform.gateways[0], {**platform.demo, "api_key": other["api_key"]}).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["code"] == "wrong_project"
    # ...and it works on its own project's URL.
    ok = client_for(platform.gateways[0], other).chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert ok.model == "m2"


def test_key_without_inference_scope_is_403(platform):
    mgmt = platform.bootstrap(project="demo", endpoint="my-endpoint", model="demo-model", scopes="management")
    r = post(platform, key=mgmt["api_key"])
    assert r.status_code == 403
    assert error_of(r)["code"] == "insufficient_scope"


def test_unknown_endpoint_and_project_are_404(platform):
    key = platform.demo["api_key"]
    project_path = platform.demo["base_path"].split("/")[1]
    r = post(platform, path=f"/{project_path}/no-such-endpoint/v1/chat/completions", key=key)
    assert r.status_code == 404 and error_of(r)["code"] == "endpoint_not_found"
    r = post(platform, path="/notaproject/ep/v1/chat/completions", key=key)
    assert r.status_code == 404 and error_of(r)["code"] == "project_not_found"
    r = httpx.get(platform.gateways[0] + "/nothing/here", timeout=10)
    assert r.status_code == 404 and error_of(r)["code"] == "unknown_url"
    with pytest.raises(openai.NotFoundError):
        client_for(platform.gateways[0], {**platform.demo, "base_path": f"/{project_path}/nope/v1"}).models.list()


@pytest.mark.parametrize("raw,param", [
    (b"{not json", None),
    (b"", None),
    (b"[]", None),
    (b'{"model":"m"}', "messages"),
    (b'{"model":"m","messages":[]}', "messages"),
    (b'{"model":"m","messages":[{"role":"robot","content":"x"}]}', "messages[0].role"),
    (b'{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":-1}', "max_tokens"),
    (b'{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":"hot"}', "temperature"),
    (b'{"model":"m","messages":[{"role":"user","content":"x"}],"n":1000}', "n"),
    (b'{"messages":[{"role":"user","content":"x"}]}', "model"),
])
def test_bad_bodies_are_400(platform, raw, param):
    r = post(platform, key=platform.demo["api_key"], raw=raw)
    assert r.status_code == 400, r.text
    err = error_of(r)
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param


def test_bad_body_via_sdk_is_bad_request_error(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], top_p=3)
    assert e.value.body["param"] == "top_p"


def test_too_large_body_is_413(platform):
    big = b'{"model":"m","messages":[{"role":"user","content":"' + b"a" * (9 * 1024 * 1024) + b'"}]}'
    r = post(platform, key=platform.demo["api_key"], raw=big)
    assert r.status_code == 413
    assert error_of(r)["code"] == "request_too_large"


def test_wrong_method_is_refused_in_openai_shape(platform):
    r = httpx.get(platform.gateways[0] + platform.demo["base_path"] + "/chat/completions",
                  headers={"Authorization": f"Bearer {platform.demo['api_key']}"}, timeout=10)
    assert r.status_code in (404, 405)
    error_of(r)
