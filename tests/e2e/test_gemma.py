"""Gemma 3 270M (the base model, Q4_K_M; `scripts/setup.sh --with-gemma`, as CI runs it) behind the
whole platform: a `worker --engine gguf --model-path` of the second model, driven by the OpenAI SDK.
Its greedy text must be llama.cpp's (Tests/XeroGGUFTests/Fixtures/gemma3-reference.json, which the
Swift GemmaTests hold the in-process engine to), streamed or not."""
import json
import os

import openai
import pytest

from conftest import ROOT, client_for

GEMMA = ROOT / "models/gemma3/gemma-3-270m-q4_k_m.gguf"
REFERENCE = json.loads((ROOT / "Tests/XeroGGUFTests/Fixtures/gemma3-reference.json").read_text())


@pytest.fixture(scope="module")
def gemma(redis, tmp_path_factory):
    if not GEMMA.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("CI must have Gemma: scripts/test.sh runs scripts/setup.sh --with-gemma")
        pytest.skip("Gemma not installed (scripts/setup.sh --with-gemma)")
    from conftest import Platform
    p = Platform(redis, tmp_path_factory.mktemp("gemma"))
    try:
        p.start_router()
        gateway = p.start_gateway()
        p.start_worker("w-gemma", "--engine", "gguf", "--model-path", str(GEMMA), "--model-id", "gemma-3-270m", "--slots", "2")
        demo = p.bootstrap(project="gemma", endpoint="base", model="gemma-3-270m")
        yield client_for(gateway, demo, timeout=120)
    finally:
        p.shutdown()


def reference(prompt):
    return next(g for g in REFERENCE["greedy"] if g["prompt"] == prompt)


@pytest.mark.parametrize("prompt", ["The capital of France is", "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"])
def test_text_completions_give_llama_cpps_greedy_text_streamed_or_not(gemma, prompt):
    ref = reference(prompt)
    n = len(ref["completion_ids"])
    r = gemma.completions.create(model="gemma-3-270m", prompt=prompt, temperature=0, max_tokens=n)
    assert r.choices[0].text == ref["completion_text"]
    assert r.choices[0].finish_reason == "length"
    assert r.usage.prompt_tokens == len(ref["prompt_ids"]) and r.usage.completion_tokens == n
    streamed, finish = "", None
    for chunk in gemma.completions.create(model="gemma-3-270m", prompt=prompt, temperature=0, max_tokens=n, stream=True):
        if chunk.choices:
            streamed += chunk.choices[0].text or ""
            finish = chunk.choices[0].finish_reason or finish
    assert streamed == ref["completion_text"] and finish == "length"


def test_token_id_prompts_and_the_model_list(gemma):
    ref = reference("The capital of France is")
    r = gemma.completions.create(model="gemma-3-270m", prompt=ref["prompt_ids"], temperature=0, max_tokens=8)
    assert r.choices[0].text == gemma.completions.create(model="gemma-3-270m", prompt=ref["prompt"], temperature=0, max_tokens=8).choices[0].text
    assert r.choices[0].text and ref["completion_text"].startswith(r.choices[0].text)
    assert [m.id for m in gemma.models.list().data] == ["gemma-3-270m"]


def test_chat_to_the_base_model_is_a_400_naming_text_completions(gemma):
    with pytest.raises(openai.BadRequestError) as e:
        gemma.chat.completions.create(model="gemma-3-270m", messages=[{"role": "user", "content": "Hi"}])
    assert e.value.code == "no_chat_template" and "/v1/completions" in e.value.message
