"""Launch one segmentation node per camera, each in the camera's namespace.

    ros2 launch ros_seg multi_camera.launch.py cameras:=front,left,right image:=image_raw model:=pem_r50

The node of camera `front` reads /front/<image> and /front/camera_info and
publishes /front/semantic, /front/panoptic, /front/segments, ... The other
arguments of segmentation.launch.py (model, weights, backend, device,
camera_info, use_sim_time, params_file) given here reach every node, since the
launch configurations are forwarded into each camera's group.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, GroupAction, IncludeLaunchDescription, OpaqueFunction
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration


def camera_nodes(context: LaunchContext) -> list[GroupAction]:
    """One included segmentation.launch.py per camera namespace."""
    share = get_package_share_directory("ros_seg")
    segmentation = PythonLaunchDescriptionSource(os.path.join(share, "launch", "segmentation.launch.py"))
    cameras = [c.strip() for c in LaunchConfiguration("cameras").perform(context).split(",") if c.strip()]
    return [
        GroupAction(
            [
                IncludeLaunchDescription(
                    segmentation,
                    launch_arguments={"namespace": camera, "image": LaunchConfiguration("image")}.items(),
                )
            ],
            scoped=True,
            forwarding=True,
        )
        for camera in cameras
    ]


def generate_launch_description() -> LaunchDescription:
    """The camera list, the image topic within each camera namespace, one node per camera."""
    return LaunchDescription([
        DeclareLaunchArgument("cameras", default_value="front,rear",
                              description="Comma-separated camera namespaces, one node each"),
        DeclareLaunchArgument("image", default_value="image_raw",
                              description="Image topic within each camera namespace"),
        OpaqueFunction(function=camera_nodes),
    ])
