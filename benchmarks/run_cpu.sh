#!/usr/bin/env bash
# Regenerates the CPU benchmark results in benchmarks/cpu/ (one JSON per run) and
# benchmarks/README.md. Run on a quiet machine: other load skews every figure.
# Takes about 35 minutes on 2 cores.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
source "$ROOT/scripts/env.sh"
OUT="$ROOT/benchmarks/cpu"
mkdir -p "$OUT"
rm -f "$OUT"/*.json
T="${THREADS:-2}"
ros-seg bench --op deform_conv2d --threads "$T" --repeats 10 --json "$OUT/deform_conv2d.json" >/dev/null
ros-seg bench --op ms_deform_attn --size 1024x2048 --threads "$T" --repeats 3 --json "$OUT/ms_deform_attn_1024x2048.json" >/dev/null
ros-seg bench --op cross_attention --threads "$T" --repeats 5 --json "$OUT/cross_attention.json" >/dev/null
# Every model on both CPU backends at 512x1024 (fp32), and bf16 autocast for pem_stdc1.
for m in pem_stdc1 pem_stdc2 pem_r50 m2f_r50 proscale_r50_111 proscale_r50_222 proscale_r50_333 panoptic_segformer_r50; do
  case "$m" in pem_stdc*) R=10 ;; *) R=3 ;; esac
  for b in torch onnxruntime; do
    ros-seg bench --model "$m" --size 512x1024 --threads "$T" --repeats "$R" --backend "$b" \
      --json "$OUT/${m}_512x1024_${b}.json" >/dev/null
  done
done
ros-seg bench --model pem_stdc1 --size 512x1024 --threads "$T" --repeats 5 --precision bf16 \
  --json "$OUT/pem_stdc1_512x1024_torch_bf16.json" >/dev/null
ros-seg bench --op encoders --size 512x1024 --threads "$T" --repeats 3 --json "$OUT/encoders_512x1024.json" >/dev/null
ros-seg bench --model pem_stdc1 --size 1024x2048 --threads "$T" --repeats 5 --json "$OUT/pem_stdc1_1024x2048.json" >/dev/null
ros-seg bench --model pem_stdc2 --size 1024x2048 --threads "$T" --repeats 3 --json "$OUT/pem_stdc2_1024x2048.json" >/dev/null
ros-seg bench --model pem_r50 --size 1024x2048 --threads "$T" --repeats 3 --json "$OUT/pem_r50_1024x2048.json" >/dev/null
ros-seg bench --model pem_stdc1 --size 512x1024 --threads "$T" --repeats 8 --compare-backends torch,onnxruntime \
  --json "$OUT/pem_stdc1_512x1024_torch_vs_onnxruntime.json" >/dev/null
ros-seg bench --op train --size 512x1024 --threads "$T" --warmup 1 --repeats 4 \
  --json "$OUT/train_pem_stdc1_512x1024.json" >/dev/null
python -m ros_seg.bench.summary "$ROOT/benchmarks" > "$ROOT/benchmarks/README.md"
cat "$ROOT/benchmarks/README.md"
