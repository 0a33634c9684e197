"""ros_seg: efficient universal segmentation for ROS 2 camera topics."""
# The ROS 2 build generates the ros_seg.msg subpackage into its install space;
# this lets it be found when ros_seg itself is imported from the source tree.
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
