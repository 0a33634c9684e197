"""Launch the segmentation node with Mask2Former with the PRO-SCALE encoder.

proscale_r50_333 by default; proscale_r50_111, proscale_r50_222, or m2f_r50
for Mask2Former's own encoder.

    ros2 launch ros_seg proscale.launch.py
    ros2 launch ros_seg proscale.launch.py model:=proscale_r50_111 weights:=/data/proscale_r50_111.pt \
        device:=cuda:0 image:=/camera/image_raw

Every argument of segmentation.launch.py applies (`--show-args` lists them).
"""
from launch import LaunchDescription
from launch.actions import OpaqueFunction

from ros_seg.ros.segmentation_launch import node_launch_arguments, segmentation_node_actions


def generate_launch_description() -> LaunchDescription:
    """The segmentation node with a PRO-SCALE model."""
    return LaunchDescription([*node_launch_arguments(model="proscale_r50_333"),
                              OpaqueFunction(function=segmentation_node_actions)])
