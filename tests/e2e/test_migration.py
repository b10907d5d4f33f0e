"""Mid-stream migration (docs/routing.md, "Mid-stream migration"): a worker SIGKILLed while it
streams an answer. The router tells the gateway; the gateway resumes the job on another worker,
which replays the tokens the client already has (the same single-token steps, the same sampler
draws) and goes on. The client sees one stream, nothing repeated, nothing missing, no error.

On the simulator this only shows the platform path (it is deterministic: any re-run matches). The
proof is the built-in engine: greedy, and seeded at temperature 1, the migrated answer must equal
the uninterrupted one token for token."""
import signal
import threading

import openai
import pytest

from conftest import BUILTIN_MODEL, Platform, client_for, require_builtin_model, wait_for

CONFIG = """
default_endpoint_tier: mig
tiers:
  - {name: mig, priority: 5, weight: 1, queue_timeout_ms: 20000, request_timeout_ms: 60000}
  - {name: batch, priority: 0, weight: 0, queue_timeout_ms: 86400000, request_timeout_ms: 60000}
"""


def job_field(p, request_id, field):
    return p.redis.cli("HGET", f"xero:job:{request_id}", field)


def stream_and_kill(p, client, kill_after, **kw):
    """Streams one answer; after `kill_after` content chunks, SIGKILLs the worker serving it.
    Returns (text, the killed worker, finish reason)."""
    text, killed, finish = "", None, None
    chunks = 0
    for chunk in client.chat.completions.create(stream=True, **kw):
        if not chunk.choices:
            continue
        c = chunk.choices[0]
        if c.delta.content:
            text += c.delta.content
            chunks += 1
        if c.finish_reason:
            finish = c.finish_reason
        if chunks == kill_after and killed is None:
            wait_for(lambda: job_field(p, chunk.id, "worker") != "", timeout=5, what="the job's worker in its record")
            killed = job_field(p, chunk.id, "worker")
            p.procs.pop(killed).send_signal(signal.SIGKILL)
            request_id = chunk.id
    assert killed, "the stream ended before the kill"
    return text, killed, finish, request_id


@pytest.fixture(scope="module")
def sim(redis, tmp_path_factory):
    p = Platform(redis, tmp_path_factory.mktemp("migration-sim"), config=CONFIG)
    p.start_router()
    p.start_gateway()
    for w in ("ms1", "ms2"):
        p.start_worker(w, "--slots", "4", "--models", "mig-sim", "--sim-tpot-ms", "20", "--sim-answer-tokens", "100000")
    p.demo = p.bootstrap(project="migsim", endpoint="ep", model="mig-sim", tier="mig")
    yield p
    p.shutdown()


def test_a_worker_killed_mid_stream_costs_the_client_nothing_sim(sim):
    client = client_for(sim.gateways[0], sim.demo, timeout=60)
    args = dict(model="x", messages=[{"role": "user", "content": "migrate me"}], max_tokens=80, seed=3)
    expected = client.chat.completions.create(**args).choices[0].message.content
    text, killed, finish, rid = stream_and_kill(sim, client, 20, **args)
    print(f"sim migration: killed {killed} after 20 chunks; {len(text)} chars, finish {finish}")
    assert text == expected and finish == "length"
    assert int(job_field(sim, rid, "attempt")) == 2 and job_field(sim, rid, "worker") != killed
    assert "job resumed after its worker died" in sim.log("router")
    # Billed once, on the basis: the prompt and the 80 completion tokens (the replay not twice).
    wait_for(lambda: job_field(sim, rid, "completion_tokens") == "80", timeout=5, what="the migrated run's report")
    sim.start_worker(killed, "--slots", "4", "--models", "mig-sim", "--sim-tpot-ms", "20", "--sim-answer-tokens", "100000")


def test_a_client_that_cannot_be_continued_gets_worker_lost(sim):
    """Two choices (n = 2) cannot be replayed exactly: the stream ends with 502 worker_lost, at
    once, and nothing is billed (the router settles it as a failure)."""
    client = client_for(sim.gateways[0], sim.demo, timeout=60)
    with pytest.raises(openai.APIError) as e:
        stream_and_kill(sim, client, 10, model="x", messages=[{"role": "user", "content": "two"}], max_tokens=80, n=2)
    assert "worker_lost" in str(e.value) or getattr(e.value, "code", None) == "worker_lost"
    for w in ("ms1", "ms2"):
        if w not in sim.procs:
            sim.start_worker(w, "--slots", "4", "--models", "mig-sim", "--sim-tpot-ms", "20", "--sim-answer-tokens", "100000")


@pytest.fixture(scope="module")
def gguf(redis, tmp_path_factory):
    require_builtin_model()
    p = Platform(redis, tmp_path_factory.mktemp("migration-gguf"), config=CONFIG)
    p.start_router()
    p.start_gateway()
    for w in ("mg1", "mg2"):
        p.start_worker(w, "--engine", "gguf", "--model-path", str(BUILTIN_MODEL), "--model-id", "mig-smol", "--slots", "2")
    p.demo = p.bootstrap(project="miggguf", endpoint="ep", model="mig-smol", tier="mig")
    yield p
    p.shutdown()


@pytest.mark.parametrize("sampling", [dict(temperature=0), dict(temperature=1, seed=1234),
                                      dict(temperature=1, seed=99, response_format={"type": "json_object"})],
                         ids=["greedy", "seeded-t1", "json-mode-seeded"])
def test_migration_on_the_built_in_engine_is_exact(gguf, sampling):
    client = client_for(gguf.gateways[0], gguf.demo, timeout=120)
    prompt = "Write a long story about a lighthouse keeper and the sea."
    if "response_format" in sampling:
        prompt = "Describe a lighthouse keeper as a JSON object with many fields."
    args = dict(model="x", messages=[{"role": "user", "content": prompt}], max_tokens=200, **sampling)
    expected = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(stream=True, **args) if c.choices)
    text, killed, finish, rid = stream_and_kill(gguf, client, 40, **args)
    print(f"gguf migration ({sampling}): killed {killed} after 40 chunks; {len(text)} chars; same: {text == expected}")
    assert text == expected, f"migrated:\n{text}\n---\nuninterrupted:\n{expected}"
    assert int(job_field(gguf, rid, "attempt")) == 2
    gguf.start_worker(killed, "--engine", "gguf", "--model-path", str(BUILTIN_MODEL), "--model-id", "mig-smol", "--slots", "2")


def test_nothing_else_is_disturbed_by_a_migration(sim):
    """Other streams on the surviving worker are untouched while one is migrated onto it."""
    client = client_for(sim.gateways[0], sim.demo, timeout=60)
    results = []
    threads = [threading.Thread(target=lambda i=i: results.append(client.chat.completions.create(
        model="x", messages=[{"role": "user", "content": f"bystander {i}"}], max_tokens=30).choices[0].message.content)) for i in range(4)]
    for t in threads:
        t.start()
    args = dict(model="x", messages=[{"role": "user", "content": "migrate me again"}], max_tokens=60, seed=5)
    expected = client.chat.completions.create(**args).choices[0].message.content
    text, *_ = stream_and_kill(sim, client, 10, **args)
    for t in threads:
        t.join(30)
    assert text == expected
    assert len(results) == 4 and all(r.startswith("You said: bystander") for r in results)
