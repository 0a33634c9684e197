"""The managed (lifecycle) segmentation node's transitions, in this process.

test_ros2_launch.py drives it through `ros2 lifecycle` in a launched system;
here the transitions are triggered directly: a model that cannot load fails
configure and leaves the node unconfigured, and configure/activate/deactivate/
cleanup make and remove what they should.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import rclpy
from lifecycle_msgs.msg import State
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter

from ros_seg.ros.managed_segmentation_node import ManagedSegmentationNode
from ros_seg.ros.segmentation_node import StartupError


@pytest.fixture
def context() -> Iterator[rclpy.Context]:
    context = rclpy.Context()
    rclpy.init(context=context)
    yield context
    rclpy.shutdown(context=context)


def managed_node(context: rclpy.Context, namespace: str, **values: object) -> ManagedSegmentationNode:
    overrides = [Parameter("autostart", value=False), Parameter("device", value="cpu"),
                 Parameter("network_height", value=32), Parameter("network_width", value=64)]
    overrides += [Parameter(name, value=value) for name, value in values.items()]
    return ManagedSegmentationNode(context=context, namespace=namespace, parameter_overrides=overrides)


def test_configure_fails_cleanly_when_the_model_cannot_load(context: rclpy.Context, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    node = managed_node(context, "/broken", weights=str(garbage))
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert node._state_machine.current_state[0] == State.PRIMARY_STATE_UNCONFIGURED
        assert node.segmenter is None
    finally:
        node.destroy_node()


def test_transitions_make_and_remove_inputs_outputs_and_model(context: rclpy.Context) -> None:
    node = managed_node(context, "/managed")
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        topics = {p.topic_name for p in node.publishers}
        assert {"/managed/semantic", "/managed/panoptic", "/managed/segments", "/diagnostics"} <= topics
        assert not node._inputs and node.segmenter is not None
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert {s.topic_name for s in node.subscriptions} >= {"/managed/image", "/managed/camera_info"}
        assert node._worker is not None and node._worker.is_alive()
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert "/managed/image" not in {s.topic_name for s in node.subscriptions} and node._worker is None
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        assert "/managed/semantic" not in {p.topic_name for p in node.publishers} and node.segmenter is None
    finally:
        node.destroy_node()


def test_autostart_failure_is_a_startup_error(context: rclpy.Context, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(StartupError, match="garbage.pt"):
        ManagedSegmentationNode(context=context, parameter_overrides=[
            Parameter("weights", value=str(garbage)), Parameter("device", value="cpu")])
