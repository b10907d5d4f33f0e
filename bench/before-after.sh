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
echo "# before = $BASE, after = working tree"
python3 bench/compare.py "$OUT" side '"before"' '"after"' before after
