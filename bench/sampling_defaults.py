#!/usr/bin/env python3
"""How often candidate default sampling settings make the built-in model (SmolLM2-135M) degenerate.

Usage: bench/sampling_defaults.py BASE_URL API_KEY [SAMPLES_PER_PROMPT]

For each setting, every prompt below is sent SAMPLES times (seeds 0..SAMPLES-1; greedy settings
once) with max_tokens=400 and the seed's system prompt. An answer is *degenerate* when it runs
to the 400-token cap or repeats any 4-word window 4 times or more. The table also counts answers
that end by themselves, and, for the capital question, answers that say Paris. The choice made
from it is in docs/completions.md ("Sampling defaults"); the numbers in docs/benchmarks.md.
"""
import collections, json, sys
import openai

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain what a CPU does in two sentences.",
    "Give me three tips for learning to cook.",
    "What is 12 times 12?",
    "Translate 'good morning' into Spanish.",
    "Write a Python function that reverses a string.",
    "Who wrote Romeo and Juliet?",
    "Describe a cat in one sentence.",
    "What should I pack for a day at the beach?",
]
SETTINGS = {
    "engine default (no sampling field: greedy + frequency 0.3)": {},
    "model card (t=0.2, top_p=0.9)": {"temperature": 0.2, "top_p": 0.9},
    "llama.cpp (t=0.8, top_k=40, top_p=0.95, min_p=0.05)": {"temperature": 0.8, "top_p": 0.95, "top_k": 40, "min_p": 0.05},
    "model card + frequency 0.5": {"temperature": 0.2, "top_p": 0.9, "frequency_penalty": 0.5},
    "greedy": {"temperature": 0},
    "greedy + frequency 0.3": {"temperature": 0, "frequency_penalty": 0.3},
}
EXTRA = ("top_k", "min_p")


def degenerate(text, finish):
    w = text.split()
    grams = collections.Counter(tuple(w[i:i + 4]) for i in range(len(w) - 3))
    return finish == "length" or (bool(grams) and grams.most_common(1)[0][1] >= 4)


def main():
    base, key = sys.argv[1], sys.argv[2]
    samples = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    client = openai.OpenAI(base_url=base, api_key=key, max_retries=0, timeout=300)
    print(f"{'setting':55} {'answers':>7} {'degenerate':>10} {'ended':>6} {'paris':>6} {'median tokens':>13}")
    for name, cfg in SETTINGS.items():
        runs = 1 if cfg.get("temperature", 0) == 0 else samples
        total = bad = ended = paris = asked = 0
        tokens = []
        for prompt in PROMPTS:
            for seed in range(runs):
                r = client.chat.completions.create(
                    model="m", max_tokens=400, seed=seed,
                    messages=[{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": prompt}],
                    extra_body={k: v for k, v in cfg.items() if k in EXTRA}, **{k: v for k, v in cfg.items() if k not in EXTRA})
                c = r.choices[0]
                total += 1
                bad += degenerate(c.message.content, c.finish_reason)
                ended += c.finish_reason == "stop"
                tokens.append(r.usage.completion_tokens)
                if "France" in prompt:
                    asked += 1
                    paris += "Paris" in c.message.content
        tokens.sort()
        print(f"{name:55} {total:7} {bad:10} {ended:6} {paris:>3}/{asked:<2} {tokens[len(tokens) // 2]:13}", flush=True)


if __name__ == "__main__":
    main()
