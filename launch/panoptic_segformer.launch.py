"""Launch the segmentation node with Panoptic SegFormer (panoptic_segformer_r50 by default).

    ros2 launch ros_seg panoptic_segformer.launch.py
    ros2 launch ros_seg panoptic_segformer.launch.py weights:=/data/panoptic_segformer_r50.pt \
        device:=cuda:0 image:=/camera/image_raw

Every argument of segmentation.launch.py applies (`--show-args` lists them).
"""
from launch import LaunchDescription
from launch.actions import OpaqueFunction

from ros_seg.ros.segmentation_launch import node_launch_arguments, segmentation_node_actions


def generate_launch_description() -> LaunchDescription:
    """The segmentation node with Panoptic SegFormer."""
    return LaunchDescription([*node_launch_arguments(model="panoptic_segformer_r50"),
                              OpaqueFunction(function=segmentation_node_actions)])
