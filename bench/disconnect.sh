#!/usr/bin/env bash
# What a client disconnect costs (issue: high availability): the time from closing the socket to
# the job queued behind it streaming its first token (engine slot + router credit freed and
# reused), and to the key's concurrency slot being free in Redis. Release build, real processes,
# simulated engine at 5 ms per token; 10 rounds. Results are recorded in docs/benchmarks.md.
#   bench/disconnect.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -d /opt/swift/usr/bin ]] && export PATH="/opt/swift/usr/bin:$PATH"
swift build -c release --product xerotier >/dev/null
XEROTIER_BIN="$(swift build -c release --show-bin-path)/xerotier" .venv/bin/python -m pytest tests/e2e/test_disconnect_release.py \
  -q -s -p no:cacheprovider | grep -E "disconnect →|passed|failed"
