#!/usr/bin/env bash
# Runs every test: Swift unit tests, then the end-to-end suite (real redis-server, ZeroMQ,
# gateway/router/worker processes, driven by the OpenAI Python SDK).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --with-gemma
[[ -d /opt/swift/usr/bin ]] && export PATH="/opt/swift/usr/bin:$PATH"
swift build --build-tests
swift test --skip-build
XEROTIER_BIN="$(swift build --show-bin-path)/xerotier" .venv/bin/python -m pytest tests/e2e -q -p no:cacheprovider
