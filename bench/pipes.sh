#!/usr/bin/env bash
# Which vector instructions of the integer kernels share execution pipes on this CPU (issue 19):
# the bound of the batched kernels is the pipes that the dot products (vpdpbusd) and the FMAs that
# llama.cpp's summation order needs have in common. Prints one JSON line a probe.
set -euo pipefail
cd "$(dirname "$0")/pipes"
python3 gen.py
cc -O2 -mavx512vl -mavx512vnni -mavx512bw -mavx2 -mfma pipes.c -o /tmp/xero-pipes
grep -m1 "model name" /proc/cpuinfo
/tmp/xero-pipes
