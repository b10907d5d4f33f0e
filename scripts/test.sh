#!/usr/bin/env bash
# Runs every test: Swift unit tests, then the end-to-end suite (real redis-server, ZeroMQ,
# gateway/router/worker processes, driven by the OpenAI Python SDK).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --with-gemma --with-llama-server
# llama.cpp's own server, for the e2e test that puts it behind the `openai` engine.
export LLAMA_SERVER="${LLAMA_SERVER:-$PWD/.tools/llama.cpp/build/bin/llama-server}"
[[ -d /opt/swift/usr/bin ]] && export PATH="/opt/swift/usr/bin:$PATH"
swift build --build-tests
swift test --skip-build
XEROTIER_BIN="$(swift build --show-bin-path)/xerotier" .venv/bin/python -m pytest tests/e2e -q -p no:cacheprovider
