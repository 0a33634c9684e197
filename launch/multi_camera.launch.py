"""Launch one segmentation node per camera, each in the camera's namespace.

    ros2 launch ros_seg multi_camera.launch.py cameras:=front,left,right image:=image_raw model:=pem_r50

The node of camera `front` reads /front/<image> and /front/camera_info and
publishes /front/semantic, /front/panoptic, /front/segments, ... (under
`namespace` when one is given). Every other argument of segmentation.launch.py
applies to every node. When one node exits with an error, all of them stop and
the launch ends with a non-zero code.
"""
from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration

from ros_seg.ros.segmentation_launch import (
    LaunchArgumentError,
    fastdds_profile_actions,
    node_actions,
    node_launch_arguments,
)


def camera_nodes(context: LaunchContext) -> list:
    """The DDS profile, then one node per camera namespace (each its own Node action)."""
    cameras = [c.strip() for c in LaunchConfiguration("cameras").perform(context).split(",")]
    if not all(cameras) or len(set(cameras)) != len(cameras):
        raise LaunchArgumentError(f"launch argument 'cameras' is {','.join(cameras)!r}: give distinct camera "
                                  "namespaces separated by commas, e.g. front,left")
    namespace = LaunchConfiguration("namespace").perform(context)
    actions = fastdds_profile_actions(context)
    for camera in cameras:
        actions += node_actions(context, f"{namespace}/{camera}")
    return actions


def generate_launch_description() -> LaunchDescription:
    """The camera list, every node argument, one node per camera."""
    return LaunchDescription([
        DeclareLaunchArgument("cameras", default_value="front,rear",
                              description="Comma-separated camera namespaces, one node each"),
        *node_launch_arguments(image="image_raw"),
        OpaqueFunction(function=camera_nodes),
    ])
