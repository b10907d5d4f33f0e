"""The shared-prefix workload of issue 16, defined here and not tuned afterwards: 8 distinct system
prompts of ~1,000 tokens; REQUESTS (200) requests, each one of them chosen at random (seeded) plus
a new ~20-token question; concurrency 8; streamed through the OpenAI SDK, time to first token per
request. Prints one JSON line.

    python bench/placement_load.py BASE_URL API_KEY MODEL POLICY [requests=200] [seed=16]
"""
import json
import random
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from openai import OpenAI

base, key, model, policy = sys.argv[1:5]
requests = int(sys.argv[5]) if len(sys.argv) > 5 else 200
seed = int(sys.argv[6]) if len(sys.argv) > 6 else 16
client = OpenAI(base_url=base, api_key=key, max_retries=0, timeout=600)
rng = random.Random(seed)
TOPICS = ["tides", "lighthouses", "pilots", "moorings", "harbour dues", "fog signals", "cargo cranes", "ferry timetables"]


def system(i):
    # ~1,000 tokens: 45 sentences of about 22 tokens, distinct per prompt from the first words on.
    head = f"Desk {i} of the harbour office, {TOPICS[i]} section. "
    body = " ".join(f"Rule {k} for {TOPICS[i]}: answer visitors briefly, kindly and only about {TOPICS[i]}, citing the harbour bylaw number {i * 100 + k}."
                    for k in range(45))
    return head + body


SYSTEMS = [system(i) for i in range(8)]
WORDS = ["when", "does", "the", "next", "boat", "leave", "for", "the", "island", "and", "how", "much", "is", "a", "ticket",
         "for", "two", "adults", "with", "bikes"]
plan = [(rng.randrange(8), " ".join(rng.sample(WORDS, 12)) + f" (question {n})?") for n in range(requests)]


def one(item):
    """Time to first token, and the prompt tokens the engine reused (its usage's cached_tokens)."""
    which, question = item
    t0 = time.perf_counter()
    ttft = None
    cached = 0
    stream = client.chat.completions.create(model=model, stream=True, max_tokens=8, temperature=0, stream_options={"include_usage": True},
                                            messages=[{"role": "system", "content": SYSTEMS[which]}, {"role": "user", "content": question}])
    for chunk in stream:
        if ttft is None and chunk.choices and chunk.choices[0].delta.content:
            ttft = time.perf_counter() - t0
        if chunk.usage and chunk.usage.prompt_tokens_details:
            cached = chunk.usage.prompt_tokens_details.cached_tokens or 0
    return (ttft if ttft is not None else time.perf_counter() - t0), cached


start = time.perf_counter()
with ThreadPoolExecutor(8) as pool:
    results = list(pool.map(one, plan))
wall = time.perf_counter() - start
ttfts_ms = sorted(t * 1000 for t, _ in results)
print(json.dumps({"mode": "placement-load", "policy": policy, "requests": requests, "concurrency": 8,
                  "ttft_mean_ms": round(statistics.mean(ttfts_ms), 1), "ttft_p50_ms": round(ttfts_ms[len(ttfts_ms) // 2], 1),
                  "ttft_p90_ms": round(ttfts_ms[int(len(ttfts_ms) * 0.9)], 1), "wall_s": round(wall, 1),
                  # Requests that recomputed (most of) their system prompt: under half of it reused.
                  "cold": sum(1 for _, cached in results if cached < 500)}))
