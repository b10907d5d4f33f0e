"""Writes pipes.c: which vector instructions of the integer kernels share execution pipes.

Each probe runs 12 independent chains of one instruction (throughput-bound, not latency-bound),
or 12 chains each of two instructions interleaved. A pair that takes as long as the two alone
added (ratio ≈ 2 against the slower one) shares its pipes; one that takes as long as either alone
(ratio ≈ 1) runs beside it. Run by bench/pipes.sh."""
OPS = {
    "fma": "vfmadd231ps %%ymm30,%%ymm31,%%ymm{r}",
    "dpbusd": "vpdpbusd %%ymm30,%%ymm31,%%ymm{r}",
    "maddubsw": "vpmaddubsw %%ymm30,%%ymm{r},%%ymm{r}",
    "maddwd": "vpmaddwd %%ymm30,%%ymm{r},%%ymm{r}",
    "mulps": "vmulps %%ymm30,%%ymm{r},%%ymm{r}",
    "cvtdq2ps": "vcvtdq2ps %%ymm{r},%%ymm{r}",
    "addps": "vaddps %%ymm30,%%ymm{r},%%ymm{r}",
    "paddd": "vpaddd %%ymm30,%%ymm{r},%%ymm{r}",
}
PAIRS = [("fma", "dpbusd"), ("fma", "maddubsw"), ("fma", "maddwd"), ("dpbusd", "maddubsw"), ("fma", "mulps"),
         ("fma", "cvtdq2ps"), ("dpbusd", "cvtdq2ps"), ("fma", "addps"), ("dpbusd", "paddd")]
clob = ",".join(f'"ymm{i}"' for i in range(30))


def probe(name, ops):
    body = []
    for r in range(12):
        for k, op in enumerate(ops):
            body.append(OPS[op].format(r=r + 12 * k))
    asm = "\\n".join(body)
    return f'static double {name}(void) {{ double best = 1e30; for (int rep = 0; rep < 5; rep++) {{ uint64_t t0 = __rdtsc(); for (long i = 0; i < N; i++) __asm__ volatile("{asm}" ::: {clob}); double t = (double)(__rdtsc() - t0) / N; if (t < best) best = t; }} return best; }}'


lines = ["// Written by gen.py: edit that, not this.", "#include <stdint.h>", "#include <stdio.h>", "#include <x86intrin.h>",
         "#define N 4000000"]
for op in OPS:
    lines.append(probe(f"p_{op}", [op]))
for a, b in PAIRS:
    lines.append(probe(f"p_{a}_{b}", [a, b]))
lines.append("int main(void) {")
lines.append('    printf("12 independent chains a probe; TSC ticks an iteration (the best of 5); ratio = pair / the slower alone\\n");')
for op in OPS:
    lines.append(f'    double s_{op} = p_{op}(); printf("{{\\"probe\\":\\"{op}\\",\\"ticks\\":%.2f}}\\n", s_{op});')
for a, b in PAIRS:
    lines.append(f'    {{ double t = p_{a}_{b}(), m = s_{a} > s_{b} ? s_{a} : s_{b}; printf("{{\\"probe\\":\\"{a}+{b}\\",\\"ticks\\":%.2f,\\"ratio\\":%.2f,\\"pipes\\":\\"%s\\"}}\\n", t, t / m, t / m > 1.6 ? "shared" : t / m < 1.3 ? "separate" : "partly shared"); }}')
lines.append("    return 0;\n}")
open(__import__("os").path.join(__import__("os").path.dirname(__file__), "pipes.c"), "w").write("\n".join(lines) + "\n")
