#!/usr/bin/env bash
# A hot-path change, before and after, in one run: the platform built at BASE (the commit before
# the change) and at the working tree, the same load alternated ROUNDS times (default 3) so the
# machine's noise hits both. The cases are bench/run.sh's fabric set: non-streaming req/s, TTFT at
# 1,000 req/s, streamed tokens/s.
#   bench/before-after.sh BASE [seconds-per-run]
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${1:?usage: bench/before-after.sh BASE-COMMIT [seconds]}
SECS=${2:-6}
[[ -d /opt/swift/usr/bin ]] && export PATH="/opt/swift/usr/bin:$PATH"
WT=$(pwd)/.build-before
if [[ ! -d $WT ]]; then git worktree add -f --detach "$WT" "$BASE" >/dev/null; else git -C "$WT" checkout -q --detach "$BASE"; fi
(cd "$WT" && swift build -c release --product xerotier >/dev/null)
OLD=$(cd "$WT" && swift build -c release --show-bin-path)
swift build -c release --product xerotier >/dev/null
NEW=$(swift build -c release --show-bin-path)
OUT=$(mktemp)
for round in $(seq "${ROUNDS:-3}"); do
  for side in before after; do
    dir=$OLD; [[ $side == after ]] && dir=$NEW
    XEROTIER_BIN_DIR=$dir bench/run.sh "$SECS" fabric | grep '^{' | sed "s/}\$/,\"side\":\"$side\"}/" | tee -a "$OUT"
  done
done
python3 - "$OUT" "$BASE" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
def med(side, case, key):
    v = [r[key] for r in rows if r.get("side") == side and r.get("case") == case and key in r]
    return statistics.median(v) if v else float("nan")
print(f"# before = {sys.argv[2]}, after = working tree; medians of {len(rows) // 6} rounds")
print(f"{'figure':44} {'before':>10} {'after':>10} {'ratio':>7}")
for name, case, key in [("non-streaming req/s", "nostream", "rps"), ("TTFT p50 ms at 1,000 req/s", "rate1000", "ttft_p50_ms"),
                        ("TTFT p99 ms at 1,000 req/s", "rate1000", "ttft_p99_ms"),
                        ("streamed tokens/s (2,000-token answers)", "long", "tokens_per_s")]:
    b, a = med("before", case, key), med("after", case, key)
    print(f"{name:44} {b:10.2f} {a:10.2f} {a / b:7.3f}")
PY
