"""SLO attainment (issue 16): REQUESTS (200) streamed chat requests at CONCURRENCY (8), each asking for
40 tokens, with or without `X-SLO-TPOT-Ms: HINT`; a request attains the target when its time per
output token, measured here from the stream (first to last content chunk, over the tokens after
the first), is at most HINT. Prints one JSON line, with how far the router's predictions were from what the
workers achieved (mean absolute error, and how many were predicted to meet the hint and did not).

    python bench/slo_load.py BASE_URL API_KEY MODEL LABEL HINT_MS send-hint|no-hint [requests=200] [concurrency=8]
"""
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from openai import OpenAI

base, key, model, label, hint, mode = sys.argv[1:7]
requests = int(sys.argv[7]) if len(sys.argv) > 7 else 200
concurrency = int(sys.argv[8]) if len(sys.argv) > 8 else 8
hint = int(hint)
headers = {"X-SLO-TPOT-Ms": str(hint)} if mode == "send-hint" else {}
client = OpenAI(base_url=base, api_key=key, max_retries=0, timeout=300, default_headers=headers)


def one(n):
    stamps = []
    extra = None
    stream = client.chat.completions.create(model=model, stream=True, max_tokens=40,
                                            messages=[{"role": "user", "content": f"Request {n}: tell me about the tides."}])
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            stamps.append(time.perf_counter())
        x = (chunk.model_extra or {}).get("x_xerotier")
        if x:
            extra = x
    tpot = (stamps[-1] - stamps[0]) * 1000 / (len(stamps) - 1) if len(stamps) > 1 else None
    return tpot, extra


with ThreadPoolExecutor(concurrency) as pool:
    results = list(pool.map(one, range(requests)))
tpots = [t for t, _ in results if t is not None]
met = sum(1 for t in tpots if t <= hint)
reported = [x for _, x in results if x]
if os.environ.get("SLO_DUMP"):   # per request: the client's TPOT and the final chunk's figures
    with open(os.environ["SLO_DUMP"], "a") as f:
        for t, x in results:
            f.write(json.dumps({"label": label, "client_tpot_ms": t, **(x or {})}) + "\n")
# How far the router's TPOT prediction was from what the worker achieved (both in the final chunk).
errors = [x["tpot_ms"] - x["predicted_tpot_ms"] for x in reported
          if x.get("tpot_ms") is not None and x.get("predicted_tpot_ms") is not None]
under = sum(1 for x in reported if x.get("predicted_tpot_ms") is not None and x["predicted_tpot_ms"] <= hint
            and x.get("tpot_ms") is not None and x["tpot_ms"] > hint)
print(json.dumps({"mode": "slo", "label": label, "hint_ms": hint, "hints_sent": mode == "send-hint", "requests": requests, "concurrency": concurrency,
                  "attained": met, "attainment": round(met / max(1, len(tpots)), 3),
                  "mean_tpot_ms": round(sum(tpots) / max(1, len(tpots)), 1),
                  "reported_with_prediction": sum(1 for x in reported if x.get("predicted_tpot_ms") is not None),
                  "mean_abs_prediction_error_ms": round(sum(abs(e) for e in errors) / len(errors), 1) if errors else None,
                  "predicted_to_meet_but_missed": under}))
