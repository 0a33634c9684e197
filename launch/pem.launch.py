"""Launch the segmentation node with a PEM model (pem_stdc1 by default; pem_stdc2, pem_r50).

    ros2 launch ros_seg pem.launch.py
    ros2 launch ros_seg pem.launch.py model:=pem_r50 weights:=/data/pem_r50.pt device:=cuda:0 \
        image:=/camera/image_raw namespace:=front

Without `weights`, pem_stdc1 runs the demo checkpoint installed in share/ros_seg/models (trained on
synthetic scenes only; the node warns so and names `ros-seg zoo pull m2f_r50_cityscapes_panoptic` for a
real model). Random weights only with `weights:=random`. Every argument of segmentation.launch.py
applies (`--show-args` lists them).
"""
from launch import LaunchDescription
from launch.actions import OpaqueFunction

from ros_seg.ros.segmentation_launch import node_launch_arguments, segmentation_node_actions


def generate_launch_description() -> LaunchDescription:
    """The segmentation node with a PEM model."""
    return LaunchDescription([*node_launch_arguments(model="pem_stdc1"),
                              OpaqueFunction(function=segmentation_node_actions)])
