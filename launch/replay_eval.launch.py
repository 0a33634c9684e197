"""Replay a bag into the segmentation node and record its outputs (for a machine with ROS 2).

    ros2 launch ros_seg replay_eval.launch.py bag:=val_bag weights:=/data/pem_stdc1.pt
    ros2 launch ros_seg replay_eval.launch.py bag:=run.mcap model:=pem_r50 weights:=/data/pem_r50.pt \
        device:=cuda:0 image:=/front/image_raw rate:=0.5 record_out:=pem_r50_outputs

Starts segmentation.launch.py in the `namespace` (default ros_seg_replay),
then after `play_delay` seconds (the model loads meanwhile) `ros2 bag play`,
and `ros2 bag record` of the node's semantic, panoptic and segments outputs
plus the bag's /ground_truth topics into `record_out` (mcap). Everything
stops `drain_s` seconds after the bag has finished playing. Score the
recording, or run `ros-seg replay BAG --live` for the timing report.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    ExecuteProcess,
    IncludeLaunchDescription,
    RegisterEventHandler,
    Shutdown,
    TimerAction,
)
from launch.conditions import IfCondition
from launch.event_handlers import OnProcessExit
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration

GROUND_TRUTH_TOPICS = ["/ground_truth/semantic", "/ground_truth/panoptic", "/ground_truth/segments"]


def generate_launch_description() -> LaunchDescription:
    """The launch arguments, the node, bag play and bag record."""
    share = get_package_share_directory("ros_seg")
    namespace = LaunchConfiguration("namespace")
    arguments = [
        DeclareLaunchArgument("bag", description="Bag to replay (e.g. from `ros-seg make-bag`)"),
        DeclareLaunchArgument("model", default_value="pem_stdc1", description="Model name or config file"),
        DeclareLaunchArgument("weights", default_value="",
                              description="weights file (ros_seg checkpoint, .onnx, .engine); empty: random weights"),
        DeclareLaunchArgument("backend", default_value="torch", description="torch, onnxruntime or tensorrt"),
        DeclareLaunchArgument("device", default_value="auto", description="auto, cpu, cuda or cuda:N"),
        DeclareLaunchArgument("image", default_value="/camera/image_raw", description="Image topic of the bag"),
        DeclareLaunchArgument("namespace", default_value="ros_seg_replay",
                              description="Namespace of the node and its outputs"),
        DeclareLaunchArgument("rate", default_value="1.0", description="Playback speed factor of ros2 bag play"),
        DeclareLaunchArgument("play_delay", default_value="10.0",
                              description="Seconds before playing, while the node loads its model"),
        DeclareLaunchArgument("record", default_value="true", description="Record the outputs (true or false)"),
        DeclareLaunchArgument("record_out", default_value="ros_seg_replay_outputs",
                              description="Bag folder the outputs are recorded to (must not exist)"),
        DeclareLaunchArgument("drain_s", default_value="5.0",
                              description="Seconds to wait for the last outputs once the bag has played"),
    ]
    segmentation = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(share, "launch", "segmentation.launch.py")),
        launch_arguments={
            "model": LaunchConfiguration("model"),
            "weights": LaunchConfiguration("weights"),
            "backend": LaunchConfiguration("backend"),
            "device": LaunchConfiguration("device"),
            "image": LaunchConfiguration("image"),
            "namespace": namespace,
        }.items(),
    )
    play = ExecuteProcess(
        cmd=["ros2", "bag", "play", LaunchConfiguration("bag"), "--rate", LaunchConfiguration("rate"),
             "--delay", LaunchConfiguration("play_delay")],
        output="screen",
    )
    outputs = [["/", namespace, "/", name] for name in ("semantic", "panoptic", "segments")]
    record = ExecuteProcess(
        cmd=["ros2", "bag", "record", "--storage", "mcap", "--output", LaunchConfiguration("record_out"),
             *outputs, *GROUND_TRUTH_TOPICS],
        output="screen",
        condition=IfCondition(LaunchConfiguration("record")),
    )
    stop_after_play = RegisterEventHandler(
        OnProcessExit(
            target_action=play,
            on_exit=[TimerAction(period=LaunchConfiguration("drain_s"),
                                 actions=[Shutdown(reason="the bag has been played")])],
        )
    )
    return LaunchDescription([*arguments, segmentation, record, play, stop_after_play])
