#!/usr/bin/env bash
# Sets up ros_seg in this checkout, from nothing to a built ROS 2 package:
#   1. a virtual environment (.venv) with the pinned packages of requirements/,
#   2. ROS 2: the sourced system installation when there is one (Humble, Jazzy,
#      Kilted from apt), otherwise the ROS 2 Kilted wheels from PyPI,
#   3. `colcon build` of the package (messages, Python sources, launch, config)
#      into build/ and install/,
#   4. the ROS 2 launch and command-line tools (`ros2 launch`, `ros2 param`,
#      `ros2 topic`, `ros2 lifecycle`): the system installation's own, or without
#      one the upstream bundle in ../shared/ros2-cli (its install.sh; another
#      place with ROS_SEG_ROS2_CLI) into the venv and build/ros2-cli.
# Re-running it is cheap: packages are installed again only when requirements/
# or the bundle changed, and colcon rebuilds incrementally. Then `source scripts/env.sh`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ROS_SEG_VENV:-$ROOT/.venv}"
cd "$ROOT"

if [ -n "${ROS_DISTRO:-}" ] && command -v colcon >/dev/null && python3 -c 'import rclpy' 2>/dev/null; then
  ROS_MODE=system
else
  ROS_MODE=wheels
fi
echo "[setup] ROS 2: $ROS_MODE${ROS_DISTRO:+ ($ROS_DISTRO)}"

# 1. Virtual environment. With a system ROS 2 the venv sees its Python packages
#    (rclpy and the message packages come from the sourced PYTHONPATH).
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  if [ "$ROS_MODE" = system ]; then
    "$PYTHON" -m venv --system-site-packages "$VENV"
  else
    "$PYTHON" -m venv "$VENV"
  fi
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
REQS=(-r requirements/core.txt)
[ "$ROS_MODE" = wheels ] && REQS+=(-r requirements/ros.txt)
STAMP="$VENV/.ros_seg_requirements"
WANT="$ROS_MODE $(cat requirements/*.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  echo "[setup] installing pinned packages (requirements/)"
  "${PIP[@]}" install --quiet "${REQS[@]}" -c requirements/lock.txt 2> >(grep -v 'is ignored: it is neither' >&2)
  "${PIP[@]}" install --quiet --no-deps --no-build-isolation \
    --config-settings editable_mode=compat -e . 2> >(grep -v 'is ignored: it is neither' >&2)
  echo "$WANT" > "$STAMP"
fi

# 2./3. Build the ROS 2 package.
PYVER="$("$VENV/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
COLCON_ARGS=(--build-base "$ROOT/build" --install-base "$ROOT/install" --base-paths "$ROOT" --symlink-install)
mkdir -p "$ROOT/log"
bash "$ROOT/scripts/colcon.sh" --log-base "$ROOT/log" build "${COLCON_ARGS[@]}" --cmake-args -DBUILD_TESTING=OFF \
  >"$ROOT/log/colcon_build.txt" 2>&1 \
  || { tail -40 "$ROOT/log/colcon_build.txt"; echo "[setup] colcon build failed (full log: log/colcon_build.txt)"; exit 1; }
echo "$ROS_MODE $PYVER" > "$ROOT/install/.ros_seg_mode"

# 4. ros2 launch / param / topic / lifecycle.
if [ "$ROS_MODE" = system ]; then
  python3 -c 'import launch_ros, ros2launch, ros2param, ros2topic, ros2lifecycle' 2>/dev/null \
    || echo "[setup] WARNING: the sourced ROS 2 lacks launch/CLI packages: apt install ros-$ROS_DISTRO-launch-ros" \
            "ros-$ROS_DISTRO-ros2launch ros-$ROS_DISTRO-ros2cli-common-extensions"
else
  ROS2_CLI="${ROS_SEG_ROS2_CLI:-$ROOT/../shared/ros2-cli}"
  CLI_PREFIX="$ROOT/build/ros2-cli"
  if [ -f "$ROS2_CLI/install.sh" ]; then
    CLI_STAMP="$CLI_PREFIX/.ros_seg_installed"
    CLI_WANT="$WANT $(cat "$ROS2_CLI/install.sh" "$ROS2_CLI/requirements.txt" "$ROS2_CLI/wheels/SHA256SUMS" | sha256sum | cut -d' ' -f1)"
    if [ "$(cat "$CLI_STAMP" 2>/dev/null)" != "$CLI_WANT" ] || [ ! -f "$CLI_PREFIX/env.sh" ]; then
      echo "[setup] installing the ROS 2 launch/CLI tools from $ROS2_CLI"
      bash "$ROS2_CLI/install.sh" "$VENV" "$CLI_PREFIX" >"$ROOT/log/ros2_cli_install.txt" 2>&1 \
        || { tail -20 "$ROOT/log/ros2_cli_install.txt"; echo "[setup] installing $ROS2_CLI failed (log: log/ros2_cli_install.txt)"; exit 1; }
      echo "$CLI_WANT" > "$CLI_STAMP"
    fi
  else
    echo "[setup] WARNING: no ROS 2 launch/CLI bundle at $ROS2_CLI (set ROS_SEG_ROS2_CLI): ros2 launch," \
         "ros2 param, ros2 topic are unavailable and their tests skip"
  fi
fi
echo "[setup] done: source scripts/env.sh to use ros-seg and the ROS 2 package"
