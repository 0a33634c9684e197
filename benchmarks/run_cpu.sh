#!/usr/bin/env bash
# Regenerates the CPU benchmark results in benchmarks/cpu/ (JSON per run + RESULTS.md).
# Run on a quiet machine: other load skews every figure. Takes about 10 minutes on 2 cores.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
source "$ROOT/scripts/env.sh"
OUT="$ROOT/benchmarks/cpu"
mkdir -p "$OUT"
T="${THREADS:-2}"
ros-seg bench --op deform_conv2d --threads "$T" --repeats 10 --json "$OUT/deform_conv2d.json" >/dev/null
ros-seg bench --op cross_attention --threads "$T" --repeats 5 --json "$OUT/cross_attention.json" >/dev/null
ros-seg bench --model pem_stdc1 --size 512x1024 --threads "$T" --repeats 10 --json "$OUT/pem_stdc1_512x1024.json" >/dev/null
ros-seg bench --model pem_stdc1 --size 1024x2048 --threads "$T" --repeats 5 --json "$OUT/pem_stdc1_1024x2048.json" >/dev/null
ros-seg bench --model pem_stdc2 --size 1024x2048 --threads "$T" --repeats 3 --json "$OUT/pem_stdc2_1024x2048.json" >/dev/null
ros-seg bench --model pem_r50 --size 1024x2048 --threads "$T" --repeats 3 --json "$OUT/pem_r50_1024x2048.json" >/dev/null
python -m ros_seg.bench.summary "$OUT" > "$OUT/RESULTS.md"
cat "$OUT/RESULTS.md"
