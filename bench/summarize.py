"""Turns bench/run.sh's JSON lines into the table in docs/benchmarks.md, with ratios."""
import json
import sys

all_rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
emb_engine = [r for r in all_rows if r["mode"] == "embed-engine"]
emb_http = [r for r in all_rows if "embeddings_per_request" in r]
rows = [r for r in all_rows if r["mode"] != "embed-engine" and "embeddings_per_request" not in r]
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
    name += {"off": " (rate limits off)", "unbatched": " (admissions unbatched)", "noleases": " (no leases: every admission in Redis)"}.get(r.get("limits"), "")
    if "workers" in r:
        name += f" {r['workers']} worker(s), sim-bound"
        scale[r["workers"]] = r["rps"]
    # Open-loop runs are compared with the uncontended single-stream engine baseline.
    e = eng.get(1 if "target_rps" in r else r["concurrency"])
    base = f"{e['ttft_p50_ms']:.3f}/{e['ttft_p99_ms']:.3f}" if e else "–"
    added = f"{r['ttft_p50_ms'] - e['ttft_p50_ms']:.3f}/{r['ttft_p99_ms'] - e['ttft_p99_ms']:.3f}" if e else "–"
    print(f"| {name} | {r['concurrency']} | {r['rps']:.0f} | {r['ttft_p50_ms']:.3f} | {r['ttft_p99_ms']:.3f} | {base} | {added} | {r['tokens_per_s']:.0f} |"
          + ("" if not r["errors"] else f" errors={r['errors']}"))
if 1 in scale:
    print("\n| workers | req/s | scaling efficiency vs 1 worker |")
    print("|---|---|---|")
    for n in sorted(scale):
        print(f"| {n} | {scale[n]:.1f} | {scale[n] / (n * scale[1]) * 100:.0f} % |")

on = [r for r in rows if r["mode"] == "http" and r.get("limits") is None and "workers" not in r]
off = [r for r in rows if r["mode"] == "http" and r.get("limits") == "off"]
# The third gateway: "noleases" (every admission decided in Redis, the before of leases) or, in
# older runs, "unbatched" (each admission its own script call).
BEFORE = "noleases" if any(r.get("limits") == "noleases" for r in rows) else "unbatched"
nb = [r for r in rows if r["mode"] == "http" and r.get("limits") == BEFORE]
on_l = [r for r in rows if "target_rps" in r and r.get("limits") is None]
off_l = [r for r in rows if "target_rps" in r and r.get("limits") == "off"]
nb_l = [r for r in rows if "target_rps" in r and r.get("limits") == BEFORE]
def med(rs, k):
    v = sorted(r[k] for r in rs)
    return v[len(v) // 2]


if on and off and on_l and off_l:
    print(f"\n| tenancy (rate limits + usage), median of {len(on)} | limits on | limits off | ratio / added |")
    print("|---|---|---|---|")
    print(f"| non-streaming req/s | {med(on, 'rps'):.0f} | {med(off, 'rps'):.0f} | {med(on, 'rps') / med(off, 'rps') * 100:.0f} % |")
    print(f"| TTFT p50 at 1000/s, ms | {med(on_l, 'ttft_p50_ms'):.3f} | {med(off_l, 'ttft_p50_ms'):.3f} | +{med(on_l, 'ttft_p50_ms') - med(off_l, 'ttft_p50_ms'):.3f} ms |")
    print(f"| TTFT p99 at 1000/s, ms | {med(on_l, 'ttft_p99_ms'):.3f} | {med(off_l, 'ttft_p99_ms'):.3f} | +{med(on_l, 'ttft_p99_ms') - med(off_l, 'ttft_p99_ms'):.3f} ms |")
    if nb and nb_l:
        heads = ("leases (default)", "every admission in Redis (before)") if BEFORE == "noleases" else ("batched (default)", "one script call each (before)")
        print(f"\n| admissions, median of {len(nb)} | {heads[0]} | {heads[1]} | limits off | default / off | before / off |")
        print("|---|---|---|---|---|---|")
        print(f"| non-streaming req/s | {med(on, 'rps'):.0f} | {med(nb, 'rps'):.0f} | {med(off, 'rps'):.0f} | {med(on, 'rps') / med(off, 'rps') * 100:.0f} % | {med(nb, 'rps') / med(off, 'rps') * 100:.0f} % |")
        print(f"| TTFT p50 at 1000/s, ms | {med(on_l, 'ttft_p50_ms'):.3f} | {med(nb_l, 'ttft_p50_ms'):.3f} | {med(off_l, 'ttft_p50_ms'):.3f} | +{med(on_l, 'ttft_p50_ms') - med(off_l, 'ttft_p50_ms'):.3f} ms | +{med(nb_l, 'ttft_p50_ms') - med(off_l, 'ttft_p50_ms'):.3f} ms |")

# Per round (each round runs the gateways back to back): the ratios, and the CPU the whole path
# spent per request (the loaded gateway plus Redis, routers and workers; bench/run.sh "measured").
def cpu_us(r):
    return r["cpu_ms"] * 1000 / max(1, r["requests"])


if on and off and all("cpu_ms" in r for r in on + off + on_l + off_l):
    print("\n| round | req/s on / off | CPU µs per request on / off (non-streaming) | CPU ratio | TTFT p50 added at 1000/s | CPU µs per request on / off (1000/s) | CPU ratio |")
    print("|---|---|---|---|---|---|---|")
    cr, cl = [], []
    for i, (a, b, c, d) in enumerate(zip(on, off, on_l, off_l), 1):
        cr.append(cpu_us(b) / cpu_us(a)); cl.append(cpu_us(d) / cpu_us(c))
        print(f"| {i} | {a['rps']:.0f} / {b['rps']:.0f} ({a['rps'] / b['rps'] * 100:.0f} %) | {cpu_us(a):.0f} / {cpu_us(b):.0f} | {cr[-1] * 100:.0f} % "
              f"| {c['ttft_p50_ms'] - d['ttft_p50_ms']:+.3f} ms | {cpu_us(c):.0f} / {cpu_us(d):.0f} | {cl[-1] * 100:.0f} % |")
    cr.sort(); cl.sort()
    print(f"| median | {med(on, 'rps') / med(off, 'rps') * 100:.0f} % | | {cr[len(cr) // 2] * 100:.0f} % | "
          f"{med(on_l, 'ttft_p50_ms') - med(off_l, 'ttft_p50_ms'):+.3f} ms | | {cl[len(cl) // 2] * 100:.0f} % |")
    # Pooled: every round's requests and CPU summed per side (the rounds alternate which side runs
    # first, so the VM's drift cancels in the sums).
    def pooled(a, b, k="rps"):
        return sum(r[k] for r in a) / sum(r[k] for r in b)
    def pooled_cpu(a, b):
        return (sum(r["cpu_ms"] for r in b) / sum(r["requests"] for r in b)) / (sum(r["cpu_ms"] for r in a) / sum(r["requests"] for r in a))
    print(f"| pooled | {pooled(on, off) * 100:.0f} % | | {pooled_cpu(on, off) * 100:.0f} % | "
          f"{sum(r['ttft_p50_ms'] for r in on_l) / len(on_l) - sum(r['ttft_p50_ms'] for r in off_l) / len(off_l):+.3f} ms (mean) | | {pooled_cpu(on_l, off_l) * 100:.0f} % |")
    print("(CPU ratio: limits-off CPU per request over limits-on — the throughput share limits-on keeps when CPU is what bounds it.)")
    if all("cpu_parts_ms" in r for r in on + off):
        print("\n| non-streaming, CPU µs per request by process | " + " | ".join(["gateway", "Redis"] + [f"router/worker {i}" for i in range(1, len(on[0]["cpu_parts_ms"]) - 1)]) + " |")
        print("|---" * (len(on[0]["cpu_parts_ms"]) + 1) + "|")
        for name, rs in (("limits on", on), ("limits off", off)):
            parts = [sorted(r["cpu_parts_ms"][i] * 1000 / max(1, r["requests"]) for r in rs)[len(rs) // 2] for i in range(len(rs[0]["cpu_parts_ms"]))]
            print(f"| {name} (median) | " + " | ".join(f"{v:.0f}" for v in parts) + " |")

if emb_engine or emb_http:
    print("\n| embeddings (all-MiniLM-L6-v2) | batch | sentences/s | latency p50 ms |")
    print("|---|---|---|---|")
    for r in emb_engine:
        print(f"| in-process encoder | {r['batch']} | {r['inputs_per_s']:.0f} | {r['call_p50_ms']:.1f} per call |")
    for r in emb_http:
        print(f"| through the platform, {r['concurrency']} concurrent requests | {r['embeddings_per_request']} | {r['rps'] * r['embeddings_per_request']:.0f} | {r['total_p50_ms']:.1f} per request |")
