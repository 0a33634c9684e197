"""Launch the segmentation node with Mask2Former with the PRO-SCALE encoder (proscale_r50_333 by default).

    ros2 launch ros_seg proscale.launch.py
    ros2 launch ros_seg proscale.launch.py weights:=/data/proscale_r50_333.pt device:=cuda:0 image:=/camera/image_raw

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
    """segmentation.launch.py with Mask2Former with the PRO-SCALE encoder."""
    share = get_package_share_directory("ros_seg")
    segmentation = PythonLaunchDescriptionSource(os.path.join(share, "launch", "segmentation.launch.py"))
    return LaunchDescription([
        DeclareLaunchArgument("model", default_value="proscale_r50_333",
                              description="Model: proscale_r50_111, proscale_r50_222 or proscale_r50_333 "
                                          "(m2f_r50 for the plain Mask2Former encoder)"),
        IncludeLaunchDescription(segmentation, launch_arguments={"model": LaunchConfiguration("model")}.items()),
    ])
