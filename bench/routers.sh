#!/usr/bin/env bash
# One router against two (docs/routing.md, "Several routers"): bench/run.sh's fabric cases —
# non-streaming req/s, TTFT at 1,000 req/s, streamed tokens/s — with ROUTERS=1 and ROUTERS=2,
# alternated ROUNDS times (default 3) so the machine's noise hits both; medians and ratios.
#   bench/routers.sh [seconds-per-run]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-6}
OUT=$(mktemp)
for round in $(seq "${ROUNDS:-3}"); do
  for n in 1 2; do
    ROUTERS=$n bench/run.sh "$SECS" fabric | grep '^{' | tee -a "$OUT"
  done
done
python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
def med(n, case, key):
    v = [r[key] for r in rows if r.get("routers") == n and r.get("case") == case and key in r]
    return statistics.median(v) if v else float("nan")
print(f"# medians of {len(rows) // 6} rounds")
print(f"{'figure':44} {'1 router':>10} {'2 routers':>10} {'ratio':>7}")
for name, case, key in [("non-streaming req/s", "nostream", "rps"), ("TTFT p50 ms at 1,000 req/s", "rate1000", "ttft_p50_ms"),
                        ("TTFT p99 ms at 1,000 req/s", "rate1000", "ttft_p99_ms"),
                        ("streamed tokens/s (2,000-token answers)", "long", "tokens_per_s")]:
    a, b = med(1, case, key), med(2, case, key)
    print(f"{name:44} {a:10.2f} {b:10.2f} {b / a:7.3f}")
PY
