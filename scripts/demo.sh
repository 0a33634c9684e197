#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh), then runs the demo: a generated
# Cityscapes-like street scene segmented on the CPU, colored results in runs/demo/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
# shellcheck disable=SC1091
source "$ROOT/scripts/env.sh"
cd "$ROOT"
WEIGHTS=()
if [ -f models/pem_stdc1_synth.pt ]; then WEIGHTS=(--weights models/pem_stdc1_synth.pt); fi
ros-seg segment --synthetic --model pem_stdc1 "${WEIGHTS[@]}" --device cpu --out runs/demo
echo "demo results: $ROOT/runs/demo/overlay.png (and semantic.png, panoptic.png, segments.json)"
