#!/usr/bin/env bash
# What CURVE costs on the fabric: the same deployment with CURVE (default) and with
# --insecure-plaintext-fabric, alternated three times in one run so the machine's noise hits both.
# Rate limiting is off in both (it is measured separately). Prints each run and the medians.
#   bench/fabric.sh [seconds-per-run]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-6}
OUT=$(mktemp)
for round in 1 2 3; do
  for f in curve plain; do FABRIC=$f bench/run.sh "$SECS" fabric | grep '^{' | tee -a "$OUT"; done
done
python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
def med(f, pred, key):
    v = [r[key] for r in rows if r.get("fabric") == f and pred(r) and key in r]
    return statistics.median(v) if v else float("nan")
kinds = [("non-streaming req/s", lambda r: r.get("case") == "nostream", "rps"),
         ("TTFT p50 ms at 1,000 req/s", lambda r: r.get("case") == "rate1000", "ttft_p50_ms"),
         ("TTFT p99 ms at 1,000 req/s", lambda r: r.get("case") == "rate1000", "ttft_p99_ms"),
         ("streamed tokens/s (2,000-token answers)", lambda r: r.get("case") == "long", "tokens_per_s")]
print(f"{'figure':44} {'CURVE':>10} {'plain':>10} {'ratio':>7}")
for name, pred, key in kinds:
    c, p = med("curve", pred, key), med("plain", pred, key)
    print(f"{name:44} {c:10.2f} {p:10.2f} {c / p:7.3f}")
PY
