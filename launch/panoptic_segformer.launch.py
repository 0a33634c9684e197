"""Launch the segmentation node with Panoptic SegFormer (panoptic_segformer_r50 by default).

    ros2 launch ros_seg panoptic_segformer.launch.py
    ros2 launch ros_seg panoptic_segformer.launch.py weights:=/data/panoptic_segformer_r50.pt \
        device:=cuda:0 image:=/camera/image_raw

Every argument of segmentation.launch.py applies: model, weights, backend,
device, image, camera_info, namespace, use_sim_time, params_file.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration


def generate_launch_description() -> LaunchDescription:
    """segmentation.launch.py with Panoptic SegFormer."""
    share = get_package_share_directory("ros_seg")
    segmentation = PythonLaunchDescriptionSource(os.path.join(share, "launch", "segmentation.launch.py"))
    return LaunchDescription([
        DeclareLaunchArgument("model", default_value="panoptic_segformer_r50",
                              description="Model: panoptic_segformer_r50"),
        IncludeLaunchDescription(segmentation, launch_arguments={"model": LaunchConfiguration("model")}.items()),
    ])
