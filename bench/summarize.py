"""Turns bench/run.sh's JSON lines into the table in docs/benchmarks.md, with ratios."""
import json
import sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
eng = {r["concurrency"]: r for r in rows if r["mode"] == "engine"}
print("\n| scenario | concurrency | req/s | TTFT p50 ms | TTFT p99 ms | engine-direct TTFT p50/p99 ms | added p50/p99 ms | tokens/s |")
print("|---|---|---|---|---|---|---|---|")
scale = {}
for r in rows:
    if r["mode"] == "engine":
        continue
    name = r["mode"]
    if "target_rps" in r:
        name += f" open-loop {r['target_rps']:.0f}/s"
    if "workers" in r:
        name += f" {r['workers']} worker(s), sim-bound"
        scale[r["workers"]] = r["rps"]
    e = eng.get(r["concurrency"])
    base = f"{e['ttft_p50_ms']:.3f}/{e['ttft_p99_ms']:.3f}" if e else "–"
    added = f"{r['ttft_p50_ms'] - e['ttft_p50_ms']:.3f}/{r['ttft_p99_ms'] - e['ttft_p99_ms']:.3f}" if e else "–"
    print(f"| {name} | {r['concurrency']} | {r['rps']:.0f} | {r['ttft_p50_ms']:.3f} | {r['ttft_p99_ms']:.3f} | {base} | {added} | {r['tokens_per_s']:.0f} |"
          + ("" if not r["errors"] else f" errors={r['errors']}"))
if 1 in scale:
    print("\n| workers | req/s | scaling efficiency vs 1 worker |")
    print("|---|---|---|")
    for n in sorted(scale):
        print(f"| {n} | {scale[n]:.1f} | {scale[n] / (n * scale[1]) * 100:.0f} % |")
