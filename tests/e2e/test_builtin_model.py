"""The built-in GGUF engine through the whole platform: `xerotier up` with its default engine
(SmolLM2-135M-Instruct from scripts/setup.sh), driven by the OpenAI Python SDK."""
import json
import os
import re
import signal
import subprocess
import time

import openai
import pytest

from conftest import BIN, BUILTIN_MODEL as MODEL, ROOT, free_port, require_builtin_model, start_up
from metrics import documented, scrape, total

SEED_MESSAGES = [{"role": "system", "content": "You are a helpful assistant."},
                 {"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    require_builtin_model()
    tmp = tmp_path_factory.mktemp("up")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    proc, banner = start_up([BIN, "up", "--data", str(tmp / "data"), "--port", str(port), "--config", str(ROOT / "config/xerotier.yaml"),
                             "--models-dir", str(ROOT / "models")], env, tmp)
    try:
        assert "engine: gguf" in banner, banner
        base_url = re.search(r"Base URL: (\S+)", banner).group(1)
        key = re.search(r"API key:\s+(xero_\S+)", banner).group(1)
        yield openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=120), banner
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


SEED_MODEL = "deepseek-r1-distill-llama-70b"   # as the seed writes it; the endpoint's model answers


def curl_lines(args):
    out = subprocess.run(["curl", "-sS", "--fail-with-body", *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_seed_examples_verbatim_answer_paris_and_end(up):
    """The four examples of the seed's getting-started page, exactly as written there with only the
    host swapped: no temperature, and the streaming ones without max_tokens or a system message.
    The engine's sampling defaults and the tier's default max_tokens make them answer in a sentence."""
    client, banner = up
    base_url, key = str(client.base_url).rstrip("/"), client.api_key
    # 1. Python, "Make Your First Request".
    from openai import OpenAI
    c = OpenAI(base_url=base_url, api_key=key)
    response = c.chat.completions.create(
        model=SEED_MODEL,
        messages=[
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the capital of France?"}
        ],
        max_tokens=100
    )
    assert "Paris" in response.choices[0].message.content and response.choices[0].finish_reason == "stop", response
    # 2. curl, the same request.
    body = json.loads(curl_lines([f"{base_url}/chat/completions", "-H", f"Authorization: Bearer {key}", "-H", "Content-Type: application/json",
                                  "-d", '{\n"model": "deepseek-r1-distill-llama-70b",\n"messages": [\n{"role": "system", "content": "You are a helpful assistant."},\n'
                                        '{"role": "user", "content": "What is the capital of France?"}\n],\n"max_tokens": 100\n}']))
    assert "Paris" in body["choices"][0]["message"]["content"] and body["choices"][0]["finish_reason"] == "stop", body
    # 3. curl, "Your First Streaming Request": no system message, no max_tokens.
    sse = curl_lines(["-N", f"{base_url}/chat/completions", "-H", f"Authorization: Bearer {key}", "-H", "Content-Type: application/json",
                      "-d", '{\n"model": "deepseek-r1-distill-llama-70b",\n"messages": [\n{"role": "user", "content": "What is the capital of France?"}\n],\n"stream": true\n}'])
    events = [line[6:] for line in sse.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(ch["choices"][0]["delta"].get("content") or "" for ch in chunks if ch["choices"])
    finish = [ch["choices"][0]["finish_reason"] for ch in chunks if ch["choices"] and ch["choices"][0].get("finish_reason")]
    assert "Paris" in text and finish == ["stop"], (text, finish)
    # 4. Python, streaming.
    stream = c.chat.completions.create(
        model=SEED_MODEL,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        stream=True
    )
    printed, reasons = "", []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            printed += chunk.choices[0].delta.content
        if chunk.choices and chunk.choices[0].finish_reason:
            reasons.append(chunk.choices[0].finish_reason)
    assert "Paris" in printed and reasons == ["stop"], (printed, reasons)
    assert len(printed) < 400, printed   # a sentence, not a ramble
    assert [m.id for m in client.models.list().data] == ["smollm2-135m-instruct"]
    assert "smollm2-135m-instruct" in banner


def test_an_unbounded_request_stops_at_the_tier_default(up):
    """No max_tokens: the standard tier's default_max_tokens (512 in config/xerotier.yaml) caps the
    answer, and it is admitted and billed on that basis — never refused for it."""
    client, _ = up
    r = client.chat.completions.create(model="m", temperature=1.0, seed=3,
                                       messages=[{"role": "user", "content": "Count from one to one thousand in words, one per line."}])
    assert r.usage.completion_tokens <= 512
    assert r.choices[0].finish_reason in ("stop", "length")
    if r.choices[0].finish_reason == "length":
        assert r.usage.completion_tokens == 512


def test_text_completions_stream_and_not_agree(up):
    client, _ = up
    prompt = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    r = client.completions.create(model="m", prompt=prompt, temperature=0, max_tokens=24)
    assert r.object == "text_completion" and r.id.startswith("cmpl-")
    assert "Paris" in r.choices[0].text and r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens > 5 and r.usage.completion_tokens > 0
    text, finish = "", None
    for chunk in client.completions.create(model="m", prompt=prompt, temperature=0, max_tokens=24, stream=True):
        for ch in chunk.choices:
            text += ch.text
            finish = ch.finish_reason or finish
    assert text == r.choices[0].text and finish == "stop"
    # No max_tokens: OpenAI's 16.
    r = client.completions.create(model="m", prompt="One, two, three, four,", temperature=0)
    assert r.usage.completion_tokens <= 16
    if r.choices[0].finish_reason == "length":
        assert r.usage.completion_tokens == 16


def test_text_completions_n_echo_logprobs_and_token_prompts(up):
    client, _ = up
    # Two prompts × n=2, greedy: choices numbered prompt by prompt; a prompt's choices agree.
    r = client.completions.create(model="m", prompt=["The sky is", "One, two, three,"], n=2, temperature=0, max_tokens=6)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    assert r.choices[0].text == r.choices[1].text and r.choices[2].text == r.choices[3].text
    assert r.choices[0].text != r.choices[2].text
    # Echo + logprobs, max_tokens 0: the prompt scored, nothing generated.
    r = client.completions.create(model="m", prompt="The capital of France is", echo=True, logprobs=2, max_tokens=0)
    c = r.choices[0]
    assert c.text == "The capital of France is" and r.usage.completion_tokens == 0
    assert "".join(c.logprobs.tokens) == c.text
    assert c.logprobs.token_logprobs[0] is None and all(lp <= 0 for lp in c.logprobs.token_logprobs[1:])
    assert all(len(t) <= 2 for t in c.logprobs.top_logprobs[1:]) and c.logprobs.text_offset[0] == 0
    # Echo + logprobs with generation: prompt tokens then generated ones, offsets increasing.
    r = client.completions.create(model="m", prompt="The capital of France is", echo=True, logprobs=1, max_tokens=4, temperature=0)
    c = r.choices[0]
    assert c.text.startswith("The capital of France is") and len(c.text) > len("The capital of France is")
    assert "".join(c.logprobs.tokens) == c.text
    assert c.logprobs.text_offset == sorted(c.logprobs.text_offset)
    # Token ids: used exactly as sent — one echoed token per id, and they count as the prompt.
    # (That ids and the text they stand for continue alike is tested in-process:
    # GGUFTextCompletionTests.testRawPromptIsTheChatPromptWithoutTheTemplate.)
    ids = [504, 3458, 282, 4649, 314]
    r = client.completions.create(model="m", prompt=ids, echo=True, logprobs=0, max_tokens=0)
    assert len(r.choices[0].logprobs.tokens) == len(ids) and "".join(r.choices[0].logprobs.tokens) == r.choices[0].text
    by_ids = client.completions.create(model="m", prompt=ids, temperature=0, max_tokens=8)
    assert by_ids.usage.prompt_tokens == len(ids) and by_ids.choices[0].text
    assert client.completions.create(model="m", prompt=ids, temperature=0, max_tokens=8).choices[0].text == by_ids.choices[0].text
    # Several token-id prompts, and ids outside the vocabulary are a 400.
    r = client.completions.create(model="m", prompt=[ids, ids[:2]], temperature=0, max_tokens=2)
    assert len(r.choices) == 2
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="m", prompt=[1, 10_000_000], max_tokens=2)
    assert e.value.param == "prompt"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="m", prompt="x", max_tokens=0)
    assert e.value.param == "max_tokens"


def test_streaming_matches_non_streaming(up):
    client, _ = up
    stream = client.chat.completions.create(model="m", messages=SEED_MESSAGES, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    text, finish, usage = "", None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    assert "Paris" in text and finish == "stop"
    whole = client.chat.completions.create(model="m", messages=SEED_MESSAGES, temperature=0)
    assert whole.choices[0].message.content == text
    assert usage.completion_tokens == whole.usage.completion_tokens


def test_streamed_emoji_arrive_whole(up):
    client, _ = up
    stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Reply with three party emoji 🎉🎉🎉"}],
                                            temperature=0, max_tokens=24, stream=True)
    pieces = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert pieces
    for p in pieces:
        assert "\ufffd" not in p, pieces     # no half characters anywhere in the stream


def test_sampling_parameters_seed_stop_n_logprobs(up):
    client, _ = up
    kw = dict(model="m", messages=[{"role": "user", "content": "Write a haiku about the sea."}], temperature=1.0, top_p=0.95, max_tokens=20)
    a = client.chat.completions.create(seed=11, **kw).choices[0].message.content
    b = client.chat.completions.create(seed=11, **kw).choices[0].message.content
    assert a == b
    r = client.chat.completions.create(model="m", messages=SEED_MESSAGES, temperature=0, stop=["Paris"])
    assert r.choices[0].message.content == "The capital of France is " and r.choices[0].finish_reason == "stop"
    r = client.chat.completions.create(n=2, seed=5, **kw)
    assert [c.index for c in r.choices] == [0, 1]
    r = client.chat.completions.create(model="m", messages=SEED_MESSAGES, temperature=0, max_tokens=5, logprobs=True, top_logprobs=2)
    content = r.choices[0].logprobs.content
    assert len(content) == 5 and all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in content)
    assert "".join(t.token for t in content) == r.choices[0].message.content
    assert r.choices[0].finish_reason == "length"


def test_context_overflow_is_a_400(up):
    client, _ = up
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "many words " * 5000}])
    assert e.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="m", messages=SEED_MESSAGES, max_tokens=9000)
    assert e.value.code == "context_length_exceeded"
    # The worker is unharmed.
    assert "Paris" in client.chat.completions.create(model="m", messages=SEED_MESSAGES, temperature=0).choices[0].message.content


def test_json_mode_50_samples_at_temperature_1_all_parse(up):
    client, _ = up
    texts = []
    for seed in (1, 2):
        r = client.chat.completions.create(
            model="m", n=25, seed=seed, temperature=1.0, max_tokens=48, response_format={"type": "json_object"},
            messages=[{"role": "system", "content": "You reply in JSON."},
                      {"role": "user", "content": "Give me a JSON object describing a cat with its name and age."}])
        texts += [c.message.content for c in r.choices]
    assert len(texts) == 50
    for t in texts:
        assert isinstance(json.loads(t), dict), t
    assert len(set(texts)) > 10, "temperature 1 samples should differ"


PET_ORDER = {
    "type": "object", "additionalProperties": False,
    "required": ["customer", "kind", "pets", "priority", "note"],
    "properties": {
        "customer": {"type": "string"},
        "kind": {"enum": ["adoption", "grooming", "boarding"]},
        "pets": {"type": "array", "items": {"$ref": "#/$defs/Pet"}, "minItems": 1, "maxItems": 2},
        "priority": {"type": "integer"},
        "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
    },
    "$defs": {"Pet": {"type": "object", "additionalProperties": False, "required": ["name", "species", "age"],
                      "properties": {"name": {"type": "string"}, "species": {"enum": ["cat", "dog"]}, "age": {"type": "integer"}}}},
}


def test_json_schema_50_samples_at_temperature_1_all_validate(up):
    import jsonschema
    client, _ = up
    texts = []
    for seed in (1, 2):
        r = client.chat.completions.create(
            model="m", n=25, seed=seed, temperature=1.0, max_tokens=300,
            response_format={"type": "json_schema", "json_schema": {"name": "pet_order", "schema": PET_ORDER, "strict": True}},
            messages=[{"role": "system", "content": "You reply in JSON."},
                      {"role": "user", "content": "Write a pet shop order for a customer with one or two pets."}])
        texts += [c.message.content for c in r.choices]
    assert len(texts) == 50
    for t in texts:
        jsonschema.validate(json.loads(t), PET_ORDER)
    assert len(set(texts)) > 10, "temperature 1 samples should differ"
    # The schema is not trivially met: a JSON object as JSON mode gives it is refused.
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"customer": "Ann", "pets": []}, PET_ORDER)
    # Without a schema, json_schema is JSON mode.
    r = client.chat.completions.create(model="m", temperature=0, max_tokens=40, messages=[{"role": "user", "content": "A cat as JSON."}],
                                       response_format={"type": "json_schema", "json_schema": {"name": "any"}})
    assert isinstance(json.loads(r.choices[0].message.content), dict)


def test_pydantic_parse_round_trip(up):
    from typing import List, Literal, Optional
    from pydantic import BaseModel
    client, _ = up

    class City(BaseModel):
        name: str
        country: Literal["France", "Spain", "Italy"]
        population_millions: float
        landmarks: List[str]
        motto: Optional[str]

    r = client.beta.chat.completions.parse(model="m", temperature=0, max_tokens=200, response_format=City,
                                           messages=[{"role": "user", "content": "Describe Paris as JSON."}])
    city = r.choices[0].message.parsed
    assert isinstance(city, City) and city.country in ("France", "Spain", "Italy")
    assert City.model_validate_json(r.choices[0].message.content) == city


def test_strict_schema_with_an_unsupported_keyword_is_refused_naming_it(up):
    client, _ = up
    schema = {"type": "object", "properties": {"email": {"type": "string", "pattern": "^[a-z]+@x$"}}, "required": ["email"]}
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}],
                                       response_format={"type": "json_schema", "json_schema": {"name": "e", "schema": schema, "strict": True}})
    assert "'pattern'" in e.value.message and e.value.code == "unsupported_schema_keyword"
    # strict false: the keyword is ignored, the rest enforced (docs/completions.md).
    r = client.chat.completions.create(model="m", temperature=0, max_tokens=40, messages=[{"role": "user", "content": "hi"}],
                                       response_format={"type": "json_schema", "json_schema": {"name": "e", "schema": schema, "strict": False}})
    assert isinstance(json.loads(r.choices[0].message.content)["email"], str)


def test_prefix_cache_reports_cached_tokens_and_keeps_answers(up):
    client, banner = up
    system = "You are a meticulous assistant. " * 20   # a long shared system prompt
    def ask(q):
        return client.chat.completions.create(model="m", temperature=0, max_tokens=16,
                                              messages=[{"role": "system", "content": system}, {"role": "user", "content": q}])
    first = ask("What is the capital of France?")
    again = ask("What is the capital of France?")
    assert again.choices[0].message.content == first.choices[0].message.content
    assert again.usage.prompt_tokens_details.cached_tokens == again.usage.prompt_tokens - 2
    other = ask("Name a colour.")       # another question, same system prompt
    assert other.usage.prompt_tokens_details.cached_tokens > 100
    # The worker reports the hashes of the prefix blocks it holds; the router puts them in Redis.
    redis_url = re.search(r"Redis:\s+(\S+)", banner).group(1)
    def blocks():
        keys = subprocess.run(["redis-cli", "-u", redis_url, "--scan", "--pattern", "xero:worker:*:prefixes"],
                              capture_output=True, text=True).stdout.split()
        return sum(int(subprocess.run(["redis-cli", "-u", redis_url, "SCARD", k], capture_output=True, text=True).stdout) for k in keys)
    deadline = time.time() + 10
    while blocks() < 4 and time.time() < deadline:
        time.sleep(0.3)
    assert blocks() >= 4    # the ~130-token system prompt alone is 4 blocks of 32


def test_every_documented_metric_is_served_by_its_processes(up):
    """The banner names each process's metrics URL (the gateway's first). Each metric that
    docs/operations.md lists is served by a process it names, with exactly the labels it names;
    the Grafana dashboard asks only for metrics that exist. Runs after the tests above, so the
    gateway has answered chat requests and the built-in worker's prefix cache has been used."""
    client, banner = up
    client.chat.completions.create(model="m", messages=SEED_MESSAGES, max_tokens=4, temperature=0)
    urls = re.findall(r"^\s*Metrics:\s+(http://\S+/metrics)\s+\((\S+)\)", banner, re.M)
    names = [n for _, n in urls]
    assert names[0] == "gateway" and {"router", "batch-runner", "worker-1"} <= set(names), banner
    time.sleep(1.2)   # one worker heartbeat: its gauges and the router's are fresh
    scrapes = {n: scrape(int(u.rsplit(":", 1)[1].split("/")[0])) for u, n in urls}
    rows = documented()
    assert len(rows) >= 20
    served = set()
    for name, kind, labels, processes in rows:
        where = [p if p != "worker" else "worker-1" for p in processes]
        found = False
        for p in where:
            for (sample, ls) in scrapes[p]:
                base = re.sub(r"_(bucket|sum|count)$", "", sample) if kind == "histogram" else sample
                if base == name:
                    assert sorted(k for k, _ in ls if k != "le") == sorted(labels), (name, p, ls)
                    found = True
        assert found, f"{name} is documented for {processes} but none serves it"
        served.add(name)
    # The KV cache and the prefix cache really move on the built-in engine.
    worker = scrapes["worker-1"]
    assert total(worker, "xerotier:kv_cache_bytes") > 0
    assert 0 < total(worker, "xerotier:prefix_cache_hits_total") < total(worker, "xerotier:prefix_cache_queries_total")
    # So does its batch loop: passes, the tokens they took, the time they took.
    assert 0 < total(worker, "xerotier:engine_steps_total") <= total(worker, "xerotier:engine_step_tokens_total")
    assert total(worker, "xerotier:engine_busy_seconds_total") > 0
    # Nothing undocumented with our prefix.
    exported = {re.sub(r"_(bucket|sum|count)$", "", s) for sc in scrapes.values() for (s, _) in sc if s.startswith("xerotier:")}
    assert exported <= served, exported - served
    dashboard = json.loads((ROOT / "docker/grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    exprs += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    asked = {re.sub(r"_(bucket|sum|count)$", "", m) for e in exprs for m in re.findall(r"xerotier:[a-z0-9_]+", e)}
    assert asked and asked <= served, asked - served


def test_worker_refuses_missing_or_broken_model_files(tmp_path):
    """`xerotier worker --engine gguf` with a model it cannot run exits at once, saying why."""
    def worker(*args):
        return subprocess.run([BIN, "worker", "--engine", "gguf", "--id", "w", *args], capture_output=True, text=True, timeout=30)
    r = worker("--model-path", str(tmp_path / "nope.gguf"))
    assert r.returncode != 0 and "no model file" in r.stderr
    if MODEL.exists():
        cut = tmp_path / "cut.gguf"
        cut.write_bytes(MODEL.read_bytes()[:1_000_000])
        r = worker("--model-path", str(cut))
        assert r.returncode != 0 and "truncated" in r.stderr, r.stderr
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model at all" * 10)
    r = worker("--model-path", str(junk))
    assert r.returncode != 0 and "not a GGUF file" in r.stderr, r.stderr
    r = subprocess.run([BIN, "worker", "--engine", "bogus", "--id", "w"], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "unknown engine 'bogus'" in r.stderr and "gguf" in r.stderr
