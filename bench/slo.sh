#!/usr/bin/env bash
# SLO-aware placement (issue 16): 2 fast and 2 slow simulated workers (THE SIMULATOR: 5 and 25 ms
# per output token, 8 slots each), 200 streamed requests at concurrency 8 with a TPOT hint of 15 ms
# (between the two speeds), against the same requests without the hint (plain least_loaded).
# Attainment = share of requests whose TPOT, measured by the client, is within 15 ms.
# CONCURRENCY (default 8; 16 fills half the fleet's 32 slots, what the fast workers can hold).
#   bench/slo.sh
cd "$(dirname "$0")/.."
tiers_yaml() { printf '%s\n' "default_endpoint_tier: standard" "tiers:" \
  "  - {name: standard, priority: 5, weight: 1, queue_timeout_ms: 600000, request_timeout_ms: 600000}"; }
source bench/deployment.sh
# Ids that say nothing of speed, fast and slow alternating in id order: least_loaded breaks ties
# between idle workers by id, and "fast-1" < "slow-1" would hand the baseline the fast workers.
for spec in w1:5 w2:25 w3:5 w4:25; do
  "$X" worker --router-port $ROUTER --id "slo-${spec%%:*}" --models bench-model --slots 8 --sim-tpot-ms "${spec##*:}" \
    --sim-answer-tokens 40 --log-level warning & PIDS+=($!)
done
sleep 2
bootstrap slo bench-model
OUT=$WORK/results.jsonl
"$PY" bench/slo_load.py "$BASE" "$KEY" bench-model "least_loaded, no hint" 15 no-hint "${REQUESTS:-200}" "${CONCURRENCY:-8}" | tee -a "$OUT"
"$PY" bench/slo_load.py "$BASE" "$KEY" "bench-model" "with X-SLO-TPOT-Ms: 15" 15 send-hint "${REQUESTS:-200}" "${CONCURRENCY:-8}" | tee -a "$OUT"
python3 - "$OUT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"\nconcurrency {rows[0]['concurrency']}")
print("\n| requests | attained (TPOT ≤ 15 ms) | attainment | mean TPOT ms | final chunks with a prediction |")
print("|---|---:|---:|---:|---:|")
for r in rows:
    print(f"| {r['label']} | {r['attained']} of {r['requests']} | {r['attainment'] * 100:.0f} % | {r['mean_tpot_ms']} | {r['reported_with_prediction']} |")
print(f"\nattainment with hints / without: {rows[1]['attainment'] / max(rows[0]['attainment'], 1e-9):.2f}×")
PY
