# Source this file (bash) after scripts/setup.sh: it activates the venv and the
# built ROS 2 package, and keeps DDS on this machine unless told otherwise.
_ros_seg_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_ros_seg_venv="${ROS_SEG_VENV:-$_ros_seg_root/.venv}"
if [ ! -f "$_ros_seg_root/install/.ros_seg_mode" ]; then
  echo "ros_seg is not set up: run scripts/setup.sh first" >&2
  return 1
fi
read -r _ros_seg_mode _ros_seg_pyver < "$_ros_seg_root/install/.ros_seg_mode"
# shellcheck disable=SC1091
. "$_ros_seg_venv/bin/activate"
if [ "$_ros_seg_mode" = system ]; then
  # shellcheck disable=SC1091
  . "$_ros_seg_root/install/setup.bash"
else
  _p="$_ros_seg_root/install/ros_seg"
  export PYTHONPATH="$_p/lib/python$_ros_seg_pyver/site-packages${PYTHONPATH:+:$PYTHONPATH}"
  export LD_LIBRARY_PATH="$_p/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export AMENT_PREFIX_PATH="$_p:$_ros_seg_venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
  export PATH="$_p/lib/ros_seg:$PATH"
  # ros2 launch / param / topic / lifecycle from the upstream bundle (scripts/setup.sh step 4).
  # shellcheck disable=SC1091
  if [ -f "$_ros_seg_root/build/ros2-cli/env.sh" ]; then . "$_ros_seg_root/build/ros2-cli/env.sh"; fi
fi
# The source tree comes first, so files added since the last colcon build are
# found; ros_seg/__init__.py extends the package to the generated ros_seg.msg.
export PYTHONPATH="$_ros_seg_root:$PYTHONPATH"
# DDS discovery stays on loopback (FastDDS multicasts off the machine otherwise).
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
if [ "${ROS_DISTRO:-}" = humble ]; then export ROS_LOCALHOST_ONLY="${ROS_LOCALHOST_ONLY:-1}"; fi
unset _ros_seg_root _ros_seg_venv _ros_seg_mode _ros_seg_pyver _p
