"""Launch one ros_seg segmentation node for any model.

    ros2 launch ros_seg segmentation.launch.py model:=pem_r50 weights:=/data/pem_r50.pt \
        image:=/camera/image_raw camera_info:=/camera/camera_info namespace:=front

Parameters come from `params_file` (config/pem.yaml by default), then from the
launch arguments model, weights, backend, device and use_sim_time.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue


def generate_launch_description() -> LaunchDescription:
    """The launch arguments and the node."""
    share = get_package_share_directory("ros_seg")
    arguments = [
        DeclareLaunchArgument("model", default_value="pem_stdc1",
                              description="Model name (pem_stdc1, pem_stdc2, pem_r50, ...) or model config file"),
        DeclareLaunchArgument("weights", default_value="",
                              description="weights file: ros_seg checkpoint, or its .onnx / .engine export for "
                              "the onnxruntime / tensorrt backend; empty runs random weights (tests only)"),
        DeclareLaunchArgument("backend", default_value="torch",
                              description="Inference backend: torch, onnxruntime or tensorrt"),
        DeclareLaunchArgument("device", default_value="auto", description="auto, cpu, cuda or cuda:N"),
        DeclareLaunchArgument("image", default_value="image", description="Input image topic (remaps 'image')"),
        DeclareLaunchArgument("camera_info", default_value="camera_info",
                              description="Camera info topic (remaps 'camera_info')"),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node and its topics"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="Use /clock time"),
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "pem.yaml"),
                              description="YAML file of node parameters (/**: ros__parameters:)"),
    ]
    node = Node(
        package="ros_seg",
        executable="segmentation_node",
        name="segmentation_node",
        namespace=LaunchConfiguration("namespace"),
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "model": ParameterValue(LaunchConfiguration("model"), value_type=str),
                "weights": ParameterValue(LaunchConfiguration("weights"), value_type=str),
                "backend": ParameterValue(LaunchConfiguration("backend"), value_type=str),
                "device": ParameterValue(LaunchConfiguration("device"), value_type=str),
                "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool),
            },
        ],
        remappings=[
            ("image", LaunchConfiguration("image")),
            ("camera_info", LaunchConfiguration("camera_info")),
        ],
        output="screen",
        emulate_tty=True,
    )
    return LaunchDescription([*arguments, node])
