"""Medians of bench/run.sh's fabric cases for two sides of a comparison, with their ratio.
  compare.py RESULTS.jsonl FIELD A B [LABEL-A LABEL-B]
FIELD is the JSON key that tells the sides apart ("side", "routers"); A and B its values (JSON)."""
import json
import statistics
import sys

path, field, a, b = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
labels = sys.argv[5:7] if len(sys.argv) >= 7 else [str(a), str(b)]
rows = [json.loads(line) for line in open(path) if line.startswith("{")]


def med(side, case, key):
    v = [r[key] for r in rows if r.get(field) == side and r.get("case") == case and key in r]
    return statistics.median(v) if v else float("nan")


print(f"# medians of {len(rows) // 6} rounds")
print(f"{'figure':44} {labels[0]:>10} {labels[1]:>10} {'ratio':>7}")
for name, case, key in [("non-streaming req/s", "nostream", "rps"), ("TTFT p50 ms at 1,000 req/s", "rate1000", "ttft_p50_ms"),
                        ("TTFT p99 ms at 1,000 req/s", "rate1000", "ttft_p99_ms"),
                        ("streamed tokens/s (2,000-token answers)", "long", "tokens_per_s")]:
    x, y = med(a, case, key), med(b, case, key)
    print(f"{name:44} {x:10.2f} {y:10.2f} {y / x:7.3f}")
