#!/usr/bin/env python3
"""Aggregate decode tokens/s of N concurrent streams through the official OpenAI Python SDK (the
client issue 19 measures with), each a thread looping streamed chat completions for `seconds`.
Tokens are the server's own usage counts (stream_options include_usage), so a server that packs
several tokens in one chunk is counted right.
    sdk_streams.py BASE_URL KEY MODEL [seconds=20] [concurrency list=1,8] [max_tokens=128]
Prints one JSON line per concurrency."""
import json, sys, threading, time

import openai

PROMPTS = ["Write a story about a lighthouse keeper.", "Explain how a CPU executes an instruction.",
           "List ten fruits and describe the taste of each.", "Describe a walk through a busy market."]


def run(base, key, model, seconds, n, max_tokens):
    client = openai.OpenAI(base_url=base, api_key=key, max_retries=0, timeout=300)
    tokens, requests, lock = [0], [0], threading.Lock()
    start = time.monotonic()
    end = start + seconds

    def worker(i):
        k = i
        while time.monotonic() < end:
            stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": PROMPTS[k % len(PROMPTS)]}],
                                                    max_tokens=max_tokens, temperature=0.7, seed=k, stream=True,
                                                    stream_options={"include_usage": True})
            used = 0
            for chunk in stream:
                if chunk.usage:
                    used = chunk.usage.completion_tokens
            with lock:
                tokens[0] += used
                requests[0] += 1
            k += n
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads: t.start()
    for t in threads: t.join()
    elapsed = time.monotonic() - start
    print(json.dumps({"mode": "sdk-streams", "concurrency": n, "requests": requests[0], "completion_tokens": tokens[0],
                      "seconds": round(elapsed, 1), "tokens_per_s": round(tokens[0] / elapsed, 1)}), flush=True)


def main():
    base, key, model = sys.argv[1:4]
    seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 20
    levels = [int(c) for c in (sys.argv[5] if len(sys.argv) > 5 else "1,8").split(",")]
    max_tokens = int(sys.argv[6]) if len(sys.argv) > 6 else 128
    for n in levels:
        run(base, key, model, seconds, n, max_tokens)


if __name__ == "__main__":
    main()
