"""Time to first token through an OpenAI-compatible endpoint for a ~1,000-token prompt whose
prefix is already cached vs one that is new (issue 6). Streams with the OpenAI SDK; prints JSON.

    python bench/ttft_prefix.py BASE_URL API_KEY MODEL [repeats=5]

Cold: the long prefix starts with a fresh nonce each time, so nothing but the chat template's
system prompt can be reused. Cached: one warm-up request, then the same prefix with a different
short question each time. Median over `repeats`.
"""
import json
import statistics
import sys
import time
import uuid

from openai import OpenAI

base, key, model = sys.argv[1], sys.argv[2], sys.argv[3]
repeats = int(sys.argv[4]) if len(sys.argv) > 4 else 5
client = OpenAI(base_url=base, api_key=key, max_retries=0, timeout=120)

SENTENCES = [f"Record {i}: the lighthouse keeper logged wind from the {d}, {i % 7 + 2} knots, and a calm sea."
             for i, d in zip(range(41), ["north", "east", "south", "west"] * 11)]


def prefix(nonce):
    return f"Logbook {nonce}.\n" + "\n".join(SENTENCES) + "\n"


def ttft(content):
    start = time.perf_counter()
    stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}],
                                            max_tokens=8, temperature=0, stream=True)
    first = None
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter()
    return ((first or time.perf_counter()) - start) * 1000


usage = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prefix("x") + "Summarise."}],
                                       max_tokens=1, temperature=0).usage
cold = [ttft(prefix(uuid.uuid4().hex) + "Summarise.") for _ in range(repeats)]
shared = prefix("shared")
ttft(shared + "Warm up.")
cached = [ttft(shared + f"What was logged in record {i}?") for i in range(repeats)]
c, h = statistics.median(cold), statistics.median(cached)
print(json.dumps({"prompt_tokens": usage.prompt_tokens, "ttft_cold_ms": round(c, 1), "ttft_cached_ms": round(h, 1),
                  "speedup": round(c / h, 1)}))
