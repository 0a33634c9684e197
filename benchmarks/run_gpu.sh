#!/usr/bin/env bash
# GPU checks and figures, in parts that each fit a 10-minute command:
#   bash benchmarks/run_gpu.sh kernels  [RESULTS]   Triton kernels vs the references (and torchvision), op speed
#   bash benchmarks/run_gpu.sh models   [RESULTS]   every model at 1024x2048, fp16 + channels-last, eager
#   bash benchmarks/run_gpu.sh compiled [RESULTS]   pem_stdc1 / pem_stdc2 / pem_r50 with torch.compile + CUDA graphs
#   bash benchmarks/run_gpu.sh node     [RESULTS]   the node with 2048x1024 rgb8 input at 30 Hz for 60 s (needs rclpy)
# RESULTS defaults to benchmarks/gpu-<device name>; then regenerate benchmarks/README.md with
#   python -m ros_seg.bench.summary benchmarks > benchmarks/README.md
#
# It runs with the Python given in $PYTHON (default: python3 on PATH, or the venv's after
# `source scripts/env.sh`), which must hold a CUDA build of PyTorch (it brings Triton). It needs
# neither the venv nor network access: on a machine with only PyTorch, the repository root on
# PYTHONPATH is enough for the kernels, models and compiled parts.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$((20 + $$ % 80))}"
PART="${1:?which part: kernels, models, compiled or node}"
"$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "no CUDA device: run this on a GPU machine")'
DEVICE_NAME="$("$PYTHON" -c 'import re, torch; print(re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(0).lower()).strip("-"))')"
OUT="${2:-$ROOT/benchmarks/gpu-$DEVICE_NAME}"
mkdir -p "$OUT"
bench() { "$PYTHON" -m ros_seg.cli bench "$@"; }
MODELS="pem_stdc1 pem_stdc2 pem_r50 m2f_r50 proscale_r50_111 proscale_r50_222 proscale_r50_333 panoptic_segformer_r50"

case "$PART" in
  kernels)
    "$PYTHON" -m pytest -q -p no:cacheprovider test/ops/test_gpu_kernels.py 2>&1 | tee "$OUT/kernel_tests.txt"
    bench --op deform_conv2d --device cuda --warmup 5 --repeats 50 --json "$OUT/deform_conv2d.json" >/dev/null
    bench --op ms_deform_attn --device cuda --size 1024x2048 --warmup 5 --repeats 50 \
      --json "$OUT/ms_deform_attn_1024x2048.json" >/dev/null
    ;;
  models)
    for m in $MODELS; do
      bench --model "$m" --size 1024x2048 --device cuda --precision fp16 --channels-last --warmup 5 --repeats 50 \
        --json "$OUT/${m}_1024x2048_fp16.json" >/dev/null
    done
    ;;
  compiled)
    for m in pem_stdc1 pem_stdc2 pem_r50; do
      bench --model "$m" --size 1024x2048 --device cuda --precision fp16 --channels-last --compile reduce-overhead \
        --warmup 5 --repeats 100 --json "$OUT/${m}_1024x2048_fp16_compiled.json" >/dev/null
    done
    ;;
  node)
    "$PYTHON" benchmarks/node_soak.py --device cuda --duration 60 --warmup 20 --rate 30 --size 1024x2048 \
      --node-param precision:=fp16 --node-param channels_last:=true --out "$OUT"
    ;;
  *)
    echo "unknown part $PART: use kernels, models, compiled or node" >&2
    exit 2
    ;;
esac
echo "[run_gpu] $PART done: results in $OUT"
