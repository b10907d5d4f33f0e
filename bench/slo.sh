#!/usr/bin/env bash
# SLO-aware placement (issue 16). The mix: 2 fast and 2 slow simulated workers (THE SIMULATOR: 5 and
# 25 ms per output token alone, 8 slots each), each step slower by 0.52 of that per other answer
# running (what the built-in engine measures: 4.3 ms a token alone, 20 ms beside 7 others), and 200
# streamed requests at concurrency 24 (three quarters of the fleet's 32 slots) with a TPOT hint of
# 15 ms, between the two speeds; against the same requests without the hint (plain least_loaded).
# Attainment = share of requests whose TPOT, measured by the client, is within the hint.
# At 24 the fast workers cannot hold every job within the hint: least_loaded gives them 6 each
# (18 ms); placement must keep them at 4 (12.8 ms) and send the rest to the slow ones. At 8 or 16,
# least_loaded already attains 80 % (the fast workers free their slots 5 times as often, so they get
# 5/6 of the jobs), and no placement can do better than 1.25× (docs/benchmarks.md).
# Parameters (environment):
#   CONCURRENCY (24), REQUESTS (200);
#   FAST, SLOW, HINT: the two speeds and the hint, ms per token (5, 25, 15);
#   GROWTH: how much slower a step gets per other answer running on a worker, as a fraction of its
#     speed (0.52; 0: TPOT does not depend on load);
#   XEROTIER_BIN: a binary built elsewhere, for a before/after comparison (bench/deployment.sh).
#   bench/slo.sh
#   GROWTH=0 CONCURRENCY=8 bench/slo.sh
cd "$(dirname "$0")/.."
tiers_yaml() { printf '%s\n' "default_endpoint_tier: standard" "tiers:" \
  "  - {name: standard, priority: 5, weight: 1, queue_timeout_ms: 600000, request_timeout_ms: 600000}"; }
source bench/deployment.sh
# Ids that say nothing of speed, fast and slow alternating in id order: least_loaded breaks ties
# between idle workers by id, and "fast-1" < "slow-1" would hand the baseline the fast workers.
FAST=${FAST:-5} SLOW=${SLOW:-25} HINT=${HINT:-15} GROWTH=${GROWTH:-0.52} REQUESTS=${REQUESTS:-200} CONCURRENCY=${CONCURRENCY:-24}
for spec in w1:$FAST w2:$SLOW w3:$FAST w4:$SLOW; do
  "$X" worker --router-port $ROUTER --id "slo-${spec%%:*}" --models bench-model --slots 8 --sim-tpot-ms "${spec##*:}" \
    --sim-tpot-growth "$GROWTH" --sim-answer-tokens 40 --log-level warning & PIDS+=($!)
done
sleep 2
bootstrap slo bench-model
OUT=$WORK/results.jsonl
"$PY" bench/slo_load.py "$BASE" "$KEY" bench-model "least_loaded, no hint" "$HINT" no-hint "$REQUESTS" "$CONCURRENCY" | tee -a "$OUT"
"$PY" bench/slo_load.py "$BASE" "$KEY" "bench-model" "with X-SLO-TPOT-Ms: $HINT" "$HINT" send-hint "$REQUESTS" "$CONCURRENCY" | tee -a "$OUT"
python3 - "$OUT" "$FAST" "$SLOW" "$GROWTH" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"\nworkers {sys.argv[2]} and {sys.argv[3]} ms per token, growth {sys.argv[4]}, concurrency {rows[0]['concurrency']}")
print(f"\n| requests | attained (TPOT ≤ {rows[0]['hint_ms']} ms) | attainment | mean TPOT ms | final chunks with a prediction | mean prediction error ms | predicted to meet, missed |")
print("|---|---:|---:|---:|---:|---:|---:|")
for r in rows:
    print(f"| {r['label']} | {r['attained']} of {r['requests']} | {r['attainment'] * 100:.0f} % | {r['mean_tpot_ms']} | {r['reported_with_prediction']} "
          f"| {r['mean_abs_prediction_error_ms'] if r['mean_abs_prediction_error_ms'] is not None else '–'} | {r['predicted_to_meet_but_missed']} |")
print(f"\nattainment with hints / without: {rows[1]['attainment'] / max(rows[0]['attainment'], 1e-9):.2f}×")
PY
