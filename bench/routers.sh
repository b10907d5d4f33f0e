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
python3 bench/compare.py "$OUT" routers 1 2 "1 router" "2 routers"
