#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh), lints with ruff, then runs the whole test suite.
# Extra arguments go to pytest, e.g. `scripts/test.sh -k segmenter -x`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
# shellcheck disable=SC1091
source "$ROOT/scripts/env.sh"
# DDS stays on loopback (env.sh) and on a domain of this run's own.
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
# Tests start several processes with torch on 2 cores: idle OpenMP threads sleep instead of spinning.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$((20 + $$ % 80))}"
cd "$ROOT"
# Lint first (about a second; the rules are in pyproject.toml).
ruff check .
exec python -m pytest test -q -p no:cacheprovider "$@"
