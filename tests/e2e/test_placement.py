"""Prefix-aware placement against round-robin, on two built-in-engine workers with real KV reuse
(docs/routing.md, "Placement"). Each trial uses a fresh ~300-token system prompt, so nothing an
earlier trial cached helps. Its first request streams a long answer and is kept open: the worker
that holds the prompt is the *busier* one when the follow-up (same system prompt, another
question) arrives. So neither policy can hit the cache by the luck of least_loaded's tie-break:
prefix_aware must choose the busy holder for its cache; round_robin sends it to the other worker."""
import threading
import uuid

import pytest

from conftest import BUILTIN_MODEL as MODEL, TEST_CONFIG, Platform, client_for, require_builtin_model, wait_for

MODEL_ID = "smollm2-placement"
CONFIG = TEST_CONFIG.replace("tiers:\n", """tiers:
  - {name: affinity, priority: 5, weight: 1, queue_timeout_ms: 20000, request_timeout_ms: 60000, placement: prefix_aware}
  - {name: turns, priority: 5, weight: 1, queue_timeout_ms: 20000, request_timeout_ms: 60000, placement: round_robin}
""")
TRIALS = 10


@pytest.fixture(scope="module")
def gguf_pair(redis, tmp_path_factory):
    require_builtin_model()
    p = Platform(redis, tmp_path_factory.mktemp("placement"), config=CONFIG)
    p.start_router()
    gw = p.start_gateway()
    for name in ("w-place-a", "w-place-b"):
        p.start_worker(name, "--engine", "gguf", "--model-path", str(MODEL), "--model-id", MODEL_ID, "--slots", "2")
    clients = {tier: client_for(gw, p.bootstrap(project=f"place-{tier}", endpoint=f"ep-{tier}", model=MODEL_ID, tier=tier), timeout=120)
               for tier in ("affinity", "turns")}
    yield p, clients
    p.shutdown()


def system_prompt(trial):
    topic = uuid.uuid4().hex
    return (f"Reference {topic}. You are the assistant of harbour office {trial}. Answer visitors briefly and kindly, "
            + "only about ships, tides, moorings, pilots, harbour dues and the weather at sea. " * 12)


def worker_of(p, request_id):
    return p.redis.cli("HGET", f"xero:job:{request_id}", "worker")


def run_trials(p, client):
    """Per trial: the held stream's worker, the follow-up's worker, and its cached tokens."""
    out = []
    for trial in range(TRIALS):
        system = system_prompt(trial)
        stream = client.chat.completions.create(model=MODEL_ID, stream=True, temperature=0, max_tokens=400,
                                                messages=[{"role": "system", "content": system}, {"role": "user", "content": "Tell me a long story."}])
        it = iter(stream)
        first = next(it)   # the prompt is processed (and cached) before the first token
        # Keep the stream's worker busy while the follow-up runs: read it slowly in the background.
        stop = threading.Event()

        def drain():
            try:
                for _ in it:
                    if stop.is_set():
                        break
            except Exception:   # the stream closed under it
                pass
        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        follow = client.chat.completions.create(model=MODEL_ID, temperature=0, max_tokens=4,
                                                messages=[{"role": "system", "content": system}, {"role": "user", "content": "When is high tide?"}])
        stop.set()
        stream.close()
        reader.join(timeout=30)
        details = follow.usage.prompt_tokens_details
        out.append((worker_of(p, first.id), worker_of(p, follow.id), details.cached_tokens if details else 0))
    return out


def test_prefix_aware_follows_the_busy_holder_and_round_robin_does_not(gguf_pair):
    p, clients = gguf_pair
    affinity = run_trials(p, clients["affinity"])
    hits = sum(1 for _, _, cached in affinity if cached > 0)
    same = sum(1 for held, follow, _ in affinity if held == follow)
    print("prefix_aware trials (held, follow-up, cached):", affinity)
    assert hits >= 9, f"prefix_aware: {hits} of {TRIALS} follow-ups hit the cache"
    assert same >= 9, f"prefix_aware: {same} of {TRIALS} follow-ups went to the (busier) holder"

    turns = run_trials(p, clients["turns"])
    print("round_robin trials (held, follow-up, cached):", turns)
    # A follow-up on the other worker still shares the chat template's first few tokens with
    # whatever that worker cached (about 5): a hit on the system prompt is a third of it or more.
    prompt_hits = sum(1 for _, _, cached in affinity if cached >= 100)
    rr_prompt_hits = sum(1 for _, _, cached in turns if cached >= 100)
    assert prompt_hits >= 9, affinity
    assert rr_prompt_hits <= 2, f"round_robin: {rr_prompt_hits} of {TRIALS} follow-ups hit the system prompt (it alternates workers)"
    assert sum(1 for held, follow, _ in turns if held != follow) >= 8, "round_robin sends the follow-up to the other worker"
    # Every worker reported the prompts it holds as block hashes (what the routers compare).
    for name in ("w-place-a", "w-place-b"):
        wait_for(lambda: int(p.redis.cli("SCARD", f"xero:worker:{name}:prefixes") or 0) > 0, timeout=10, what=f"{name} reported prefixes")


# SLO-aware placement: THE SIMULATOR, one fast worker (2 ms per token) and one slow (30 ms).

@pytest.fixture(scope="module")
def fast_and_slow(redis, tmp_path_factory):
    p = Platform(redis, tmp_path_factory.mktemp("slo"), config=CONFIG)
    p.start_router()
    gw = p.start_gateway()
    p.start_worker("w-slo-fast", "--models", "slo-model", "--slots", "8", "--sim-tpot-ms", "2", "--sim-answer-tokens", "10")
    p.start_worker("w-slo-slow", "--models", "slo-model", "--slots", "8", "--sim-tpot-ms", "30", "--sim-answer-tokens", "10")
    demo = p.bootstrap(project="slo-demo", endpoint="slo-ep", model="slo-model")
    yield p, gw, demo
    p.shutdown()


def test_a_tpot_hint_goes_to_the_worker_that_meets_it_and_is_reported(fast_and_slow):
    from concurrent.futures import ThreadPoolExecutor
    p, gw, demo = fast_and_slow
    plain = client_for(gw, demo)
    # Both workers get measured first (least_loaded spreads concurrent requests over them).
    with ThreadPoolExecutor(6) as pool:
        warm = list(pool.map(lambda n: plain.chat.completions.create(model="m", messages=[{"role": "user", "content": f"warm {n}"}]), range(18)))
    assert {worker_of(p, r.id) for r in warm} == {"w-slo-fast", "w-slo-slow"}
    unhinted = plain.chat.completions.with_raw_response.create(model="m", messages=[{"role": "user", "content": "no hint"}])
    assert "x-xerotier-predicted-tpot-ms" not in unhinted.headers, "no hint: nothing predicted or reported"

    hinted = client_for(gw, demo, default_headers={"X-SLO-TPOT-Ms": "10"})
    for n in range(10):
        raw = hinted.chat.completions.with_raw_response.create(model="m", messages=[{"role": "user", "content": f"hinted {n}"}])
        r = raw.parse()
        assert worker_of(p, r.id) == "w-slo-fast", f"request {n}: only the fast worker meets 10 ms per token"
        assert int(raw.headers["x-xerotier-predicted-tpot-ms"]) <= 10, dict(raw.headers)
        assert float(raw.headers["x-xerotier-tpot-ms"]) < 30, dict(raw.headers)
        assert float(raw.headers["x-xerotier-ttft-ms"]) >= 0

    stream = hinted.chat.completions.with_raw_response.create(model="m", stream=True, messages=[{"role": "user", "content": "streamed"}])
    assert int(stream.headers["x-xerotier-predicted-tpot-ms"]) <= 10
    chunks = list(stream.parse())
    last = chunks[-1].model_extra.get("x_xerotier")
    assert last is not None, "the stream's final chunk reports the achieved figures"
    assert last["predicted_tpot_ms"] <= 10 and last["tpot_ms"] is not None and last["ttft_ms"] is not None, last
    assert chunks[-1].choices == []

    # A hint no worker can meet still runs, on the best one.
    impossible = client_for(gw, demo, default_headers={"X-SLO-TPOT-Ms": "1"})
    r = impossible.chat.completions.create(model="m", messages=[{"role": "user", "content": "impossible"}])
    assert worker_of(p, r.id) == "w-slo-fast"
