#!/usr/bin/env python3
"""Aggregate decode tokens/s of N concurrent streams through the official OpenAI Python SDK (the
client issue 19 measures with), each a thread looping streamed chat completions for `seconds`.
Tokens are the server's own usage counts (stream_options include_usage), so a server that packs
several tokens in one chunk is counted right.
    sdk_streams.py BASE_URL KEY MODEL [seconds=20] [concurrency list=1,8] [max_tokens=128]
Prints one JSON line per concurrency. A list that repeats (1,8,1,8,1,8) also prints, per level,
the median over its runs and, for each level after the first, the median of its ratio to the
first level's run just before it: on a noisy VM two levels measured minutes apart can differ by
more than the effect being measured, and adjacent pairs cancel most of the drift.

Two rates per level. `tokens_per_s`: every token of every request started within `seconds`,
over the time until the last one ends — that includes the ramp-down, when the requests still
running are fewer than N. `window_tokens_per_s`: only the tokens streamed while all N streams
run, from 1 s after the start (the N first prompts arrive together) to `seconds`; each request's
tokens are spread evenly between its first and last content chunk. The second is the rate of N
concurrent streams; both levels and both servers are measured the same way.

With XERO_WORKER_METRICS=http://…/metrics (a xerotier worker's --metrics-port), each level's line
also says what the engine did meanwhile, from its step counters: `engine_tokens_per_pass` (decode
and prefill tokens over forward passes) and `engine_busy` (seconds in passes over wall seconds)."""
import json, os, re, statistics, sys, threading, time, urllib.request

import openai

PROMPTS = ["Write a story about a lighthouse keeper.", "Explain how a CPU executes an instruction.",
           "List ten fruits and describe the taste of each.", "Describe a walk through a busy market."]


def engine_totals():
    """(passes, tokens, busy seconds) from the worker's metrics, or None without XERO_WORKER_METRICS."""
    url = os.environ.get("XERO_WORKER_METRICS")
    if not url:
        return None
    text = urllib.request.urlopen(url, timeout=5).read().decode()

    def total(name):
        return sum(float(v) for v in re.findall(rf"^xerotier:{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))
    return total("engine_steps_total"), total("engine_step_tokens_total"), total("engine_busy_seconds_total")


def run(base, key, model, seconds, n, max_tokens):
    """One level; prints its line and returns its tokens/s."""
    client = openai.OpenAI(base_url=base, api_key=key, max_retries=0, timeout=300)
    tokens, requests, lock = [0], [0], threading.Lock()
    spans = []  # (first content chunk, last, completion tokens) per request
    before = engine_totals()
    start = time.monotonic()
    end = start + seconds

    def worker(i):
        k = i
        while time.monotonic() < end:
            stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": PROMPTS[k % len(PROMPTS)]}],
                                                    max_tokens=max_tokens, temperature=0.7, seed=k, stream=True,
                                                    stream_options={"include_usage": True})
            used, first, last = 0, None, None
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    last = time.monotonic()
                    first = first or last
                if chunk.usage:
                    used = chunk.usage.completion_tokens
            with lock:
                tokens[0] += used
                requests[0] += 1
                if first is not None:
                    spans.append((first, last, used))
            k += n
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads: t.start()
    for t in threads: t.join()
    elapsed = time.monotonic() - start
    w0, w1 = start + 1.0, end
    in_window = sum(used * max(0.0, min(last, w1) - max(first, w0)) / (last - first)
                    for first, last, used in spans if last > first)
    window = in_window / (w1 - w0)
    line = {"mode": "sdk-streams", "concurrency": n, "requests": requests[0], "completion_tokens": tokens[0],
            "seconds": round(elapsed, 1), "tokens_per_s": round(tokens[0] / elapsed, 1), "window_tokens_per_s": round(window, 1)}
    after = engine_totals()
    if before and after and after[0] > before[0]:
        line["engine_tokens_per_pass"] = round((after[1] - before[1]) / (after[0] - before[0]), 2)
        line["engine_busy"] = round((after[2] - before[2]) / elapsed, 3)
    print(json.dumps(line), flush=True)
    return tokens[0] / elapsed, window


def main():
    base, key, model = sys.argv[1:4]
    seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 20
    levels = [int(c) for c in (sys.argv[5] if len(sys.argv) > 5 else "1,8").split(",")]
    max_tokens = int(sys.argv[6]) if len(sys.argv) > 6 else 128
    rates, ratios, base_rate = {}, {}, None
    for n in levels:
        r = run(base, key, model, seconds, n, max_tokens)
        rates.setdefault(n, []).append(r)
        if n == levels[0]:
            base_rate = r
        elif base_rate:
            ratios.setdefault(n, []).append((r[0] / base_rate[0], r[1] / base_rate[1]))
    if len(levels) > len(rates):
        for n, rs in rates.items():
            line = {"mode": "sdk-streams-median", "concurrency": n, "runs": len(rs),
                    "tokens_per_s": round(statistics.median(r[0] for r in rs), 1),
                    "window_tokens_per_s": round(statistics.median(r[1] for r in rs), 1)}
            if n in ratios:
                line[f"ratio_to_{levels[0]}"] = round(statistics.median(x[0] for x in ratios[n]), 2)
                line["ratios"] = [round(x[0], 2) for x in ratios[n]]
                line[f"window_ratio_to_{levels[0]}"] = round(statistics.median(x[1] for x in ratios[n]), 2)
                line["window_ratios"] = [round(x[1], 2) for x in ratios[n]]
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
