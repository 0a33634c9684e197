#!/usr/bin/env bash
# colcon for this checkout's ROS 2: `scripts/colcon.sh [--log-base DIR] build|test|test-result ARGS...`.
#
# With a sourced system ROS 2 this is plain colcon. In a PyPI-only venv (the
# ROS 2 wheels, see scripts/setup.sh) the wheels' CMake files look for Python and
# numpy headers under /opt/python/cp311-cp311, where their build machine had
# them: `build` links those paths to this venv's, points CMake at the venv's
# Python, and puts the venv first on PATH, AMENT_PREFIX_PATH and CMAKE_PREFIX_PATH.
#   scripts/colcon.sh build --cmake-args -DBUILD_TESTING=ON    # then:
#   scripts/colcon.sh test && scripts/colcon.sh test-result --verbose
# (pytest options for `colcon test` go in PYTEST_ADDOPTS.)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ROS_SEG_VENV:-$ROOT/.venv}"
globals=()
if [ "${1:-}" = --log-base ] && [ $# -ge 2 ]; then
  globals=(--log-base "$2")
  shift 2
fi
[ $# -ge 1 ] || { echo "usage: scripts/colcon.sh [--log-base DIR] build|test|test-result [colcon arguments]" >&2; exit 2; }
verb="$1"
shift
mode=wheels
if [ -n "${ROS_DISTRO:-}" ] && command -v colcon >/dev/null && python3 -c 'import rclpy' 2>/dev/null; then
  mode=system
fi
if [ "$mode" = system ]; then
  exec colcon "${globals[@]}" "$verb" "$@"
fi
[ -x "$VENV/bin/colcon" ] || { echo "no colcon in $VENV: run scripts/setup.sh first" >&2; exit 1; }
export PATH="$VENV/bin:$PATH" AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
if [ "$verb" != build ]; then
  exec colcon "${globals[@]}" "$verb" "$@"
fi
pyinc="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
npinc="$("$VENV/bin/python" -c 'import numpy, os; print(os.path.join(os.path.dirname(numpy.__file__), "_core", "include"))')"
wheel_py=/opt/python/cp311-cp311
if ! { mkdir -p "$wheel_py/include" "$wheel_py/lib/python3.11/site-packages/numpy/_core" \
       && ln -sfn "$pyinc" "$wheel_py/include/python3.11" \
       && ln -sfn "$npinc" "$wheel_py/lib/python3.11/site-packages/numpy/_core/include"; } 2>/dev/null; then
  echo "cannot create $wheel_py (the ROS 2 wheels' CMake files need it): run this script as root once" >&2
  exit 1
fi
ours=(-DPython3_EXECUTABLE="$VENV/bin/python" -DPython3_NumPy_INCLUDE_DIR="$wheel_py/lib/python3.11/site-packages/numpy/_core/include")
# colcon takes one --cmake-args list: ours go at its front (the caller's come later and win).
args=()
placed=no
for arg in "$@"; do
  args+=("$arg")
  if [ "$arg" = --cmake-args ] && [ "$placed" = no ]; then
    args+=("${ours[@]}")
    placed=yes
  fi
done
[ "$placed" = yes ] || args+=(--cmake-args "${ours[@]}")
exec colcon "${globals[@]}" build "${args[@]}"
