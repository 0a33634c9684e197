"""Launch one ros_seg segmentation node for any model.

    ros2 launch ros_seg segmentation.launch.py model:=pem_r50 weights:=/data/pem_r50.pt \
        image:=/camera/image_raw camera_info:=/camera/camera_info namespace:=front input_qos:=reliable
    ros2 launch ros_seg segmentation.launch.py model:=m2f_r50 weights:=zoo:m2f_r50_cityscapes_panoptic \
        image:=/camera/image_raw    # after `ros-seg zoo pull m2f_r50_cityscapes_panoptic`

Every node parameter is a launch argument of the same name (`--show-args`
lists them with their allowed values), plus image, camera_info, namespace,
use_sim_time, params_file (loaded last: its values win), log_level and
fastdds_profile (the shipped Fast DDS profile unless the environment sets one).
When the node exits with an error, the launch ends with a non-zero code.
"""
from launch import LaunchDescription
from launch.actions import OpaqueFunction

from ros_seg.ros.segmentation_launch import node_launch_arguments, segmentation_node_actions


def generate_launch_description() -> LaunchDescription:
    """The launch arguments and the node."""
    return LaunchDescription([*node_launch_arguments(), OpaqueFunction(function=segmentation_node_actions)])
