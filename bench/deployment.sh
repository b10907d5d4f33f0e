# Sourced by bench scripts that need one small deployment on loopback: a release build, Redis, one
# router and one gateway with the tier config written to "$CFG" by the caller's `tiers_yaml`
# function. Sets X, PY, WORK, PIDS (stopped on exit), REDIS, ROUTER, HTTP; exports the fabric and
# join keys for workers. Then `bootstrap PROJECT MODEL [TIER]` sets BASE and KEY for an endpoint.
set -euo pipefail
[[ -d /opt/swift/usr/bin ]] && export PATH="/opt/swift/usr/bin:$PATH"
# XEROTIER_BIN: a binary built elsewhere (a before/after comparison), used as it is.
if [[ -n "${XEROTIER_BIN:-}" ]]; then X=$XEROTIER_BIN; else
  swift build -c release --product xerotier >/dev/null
  X=$(swift build -c release --show-bin-path)/xerotier
fi
PY=${PYTHON:-.venv/bin/python}
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
RPORT=$(free_port); redis-server --port "$RPORT" --save '' --appendonly no >/dev/null & PIDS+=($!)
REDIS=redis://127.0.0.1:$RPORT
sleep 0.5
CFG=$WORK/tiers.yaml
tiers_yaml > "$CFG"
ROUTER=$((20000 + RANDOM % 10000))
HTTP=$(free_port)
export XERO_ROUTER_KEY=$("$X" admin fabric-key --redis $REDIS)
export XERO_JOIN_KEY=$("$X" admin create-join-key --redis $REDIS)
"$X" router --config "$CFG" --router-port $ROUTER --redis $REDIS --log-level warning & PIDS+=($!)
"$X" gateway --config "$CFG" --router-port $ROUTER --redis $REDIS --port "$HTTP" --log-level warning & PIDS+=($!)
until curl -sf "http://127.0.0.1:$HTTP/health" >/dev/null; do sleep 0.2; done

bootstrap() { # project model [tier]
  local boot
  boot=$("$X" admin bootstrap --redis $REDIS --project-slug "$1" --endpoint-slug ep --model "$2" ${3:+--tier "$3"} --json)
  BASE="http://127.0.0.1:$HTTP$(echo "$boot" | python3 -c 'import json,sys; print(json.load(sys.stdin)["base_path"])')"
  KEY=$(echo "$boot" | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])')
}
