#!/usr/bin/env bash
# Memory per request: resident memory of the gateway, router and worker after each of three rounds
# of non-streaming load (8 s each) and after 5 s idle. A process whose memory grows round after
# round holds something per request (docs/benchmarks.md, "Memory per request").
#   bench/memory.sh [platform-bin-dir]   (default: this tree's release build)
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -d /opt/swift/usr/bin ]] && export PATH="/opt/swift/usr/bin:$PATH"
swift build -c release --product xerobench >/dev/null
B=$(swift build -c release --show-bin-path)/xerobench
if [[ -n ${1:-} ]]; then X=$1/xerotier; else swift build -c release --product xerotier >/dev/null; X=$(swift build -c release --show-bin-path)/xerotier; fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
RPORT=$(free_port); redis-server --port "$RPORT" --save '' --appendonly no --daemonize no >/dev/null & RS=$!
REDIS=redis://127.0.0.1:$RPORT; sleep 0.5
ROUTER=$((20000 + RANDOM % 10000)); HTTP=$(free_port)
export XERO_ROUTER_KEY=$("$X" admin fabric-key --redis $REDIS)
"$X" router --config bench/bench-config.yaml --router-port $ROUTER --redis $REDIS --log-level warning & RP=$!
export XERO_JOIN_KEY=$("$X" admin create-join-key --redis $REDIS)
"$X" gateway --config bench/bench-config.yaml --router-port $ROUTER --redis $REDIS --port $HTTP --no-rate-limits --log-level warning & GP=$!
"$X" worker --router-port $ROUTER --id prof-w --slots 512 --log-level warning & WP=$!
BOOT=$("$X" admin bootstrap --redis $REDIS --project-slug bench --endpoint-slug ep --model bench-model --json)
PATHP=$(echo "$BOOT" | python3 -c 'import json,sys; print(json.load(sys.stdin)["base_path"])')
KEY=$(echo "$BOOT" | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])')
until curl -sf "http://127.0.0.1:$HTTP/health" >/dev/null; do sleep 0.2; done; sleep 1.5
show() { echo "$1 worker $(grep VmRSS /proc/$WP/status | awk '{print $2}') kB  gateway $(grep VmRSS /proc/$GP/status | awk '{print $2}') kB  router $(grep VmRSS /proc/$RP/status | awk '{print $2}') kB"; }
for round in 1 2 3; do
  "$B" http "http://127.0.0.1:$HTTP$PATHP/chat/completions" "$KEY" 64 8 nostream 1 0 1 | python3 -c 'import json,sys; print("requests", json.load(sys.stdin)["requests"])'
  show "after load $round"; sleep 5; show "after idle $round"
done
kill $GP $RP $WP $RS; wait 2>/dev/null || true
