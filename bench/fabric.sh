#!/usr/bin/env bash
# What CURVE costs on the fabric: the same deployment with CURVE (default) and with
# --insecure-plaintext-fabric, each with workers coalescing events (default) and without
# (--no-coalesce-events: the figures before coalescing), alternated three times in one run so the
# machine's noise hits all. Rate limiting is off (measured separately). Prints each run and medians.
#   bench/fabric.sh [seconds-per-run]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-6}
OUT=$(mktemp)
for round in 1 2 3; do
  for f in curve plain; do
    for c in on off; do FABRIC=$f COALESCE=$c bench/run.sh "$SECS" fabric | grep '^{' | tee -a "$OUT"; done
  done
done
python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
def med(f, c, pred, key):
    v = [r[key] for r in rows if r.get("fabric") == f and r.get("coalesce", "off") == c and pred(r) and key in r]
    return statistics.median(v) if v else float("nan")
kinds = [("non-streaming req/s", lambda r: r.get("case") == "nostream", "rps"),
         ("TTFT p50 ms at 1,000 req/s", lambda r: r.get("case") == "rate1000", "ttft_p50_ms"),
         ("TTFT p99 ms at 1,000 req/s", lambda r: r.get("case") == "rate1000", "ttft_p99_ms"),
         ("streamed tokens/s (2,000-token answers)", lambda r: r.get("case") == "long", "tokens_per_s")]
for c in ("on", "off"):
    print(f"# workers coalescing events: {c}")
    print(f"{'figure':44} {'CURVE':>10} {'plain':>10} {'ratio':>7}")
    for name, pred, key in kinds:
        cv, pv = med("curve", c, pred, key), med("plain", c, pred, key)
        print(f"{name:44} {cv:10.2f} {pv:10.2f} {cv / pv:7.3f}")
print("# coalescing on / off, same fabric")
for f in ("curve", "plain"):
    for name, pred, key in kinds:
        on, off = med(f, "on", pred, key), med(f, "off", pred, key)
        print(f"{f:6} {name:44} {on:10.2f} {off:10.2f} {on / off:7.3f}")
PY
