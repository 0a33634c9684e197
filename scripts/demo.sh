#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh), then runs the demo: a synthetic drive is
# generated and written to an mcap bag, segmentation_node starts with the committed
# demo checkpoint (GPU when there is one, else CPU), the bag is replayed live through
# it, and runs/demo/ receives the accuracy + latency report, overlays and plots.
# Extra arguments go to `ros-seg demo` (see `ros-seg demo --help`).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
# shellcheck disable=SC1091
source "$ROOT/scripts/env.sh"
# DDS stays on this machine, on a domain of the demo's own.
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$((20 + $$ % 80))}"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
cd "$ROOT"
exec ros-seg demo --out runs/demo "$@"
