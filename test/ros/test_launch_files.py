"""The launch files' descriptions, config/pem.yaml and the Fast DDS profile, checked in this process.

test_ros2_launch.py runs every launch file with the real `ros2 launch`; these
checks are the cheap ones that hold for every file: each declares a launch
argument for every node parameter with the parameter's default and closed
choices, the default model exists, config/pem.yaml loads into the real node,
and the shipped Fast DDS profile is well-formed and installed.
"""
from __future__ import annotations

import importlib.util
import os
import re
import runpy
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from pathlib import Path

import pytest
import rclpy
import yaml

from ros_seg.models.registry import model_names
from ros_seg.ros.node_parameters import parameter_specs
from ros_seg.ros.segmentation_node import SegmentationNode

from repo_paths import REPO_ROOT

ROOT = REPO_ROOT
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.py"))
NODE_LAUNCH_FILES = [p for p in LAUNCH_FILES if p.name != "replay_eval.launch.py"]
needs_launch = pytest.mark.skipif(importlib.util.find_spec("launch_ros") is None,
                                  reason="no launch packages: run scripts/setup.sh or source a ROS 2")


def test_launch_files_exist() -> None:
    assert {p.name for p in LAUNCH_FILES} == {
        "pem.launch.py", "segmentation.launch.py", "multi_camera.launch.py", "proscale.launch.py",
        "panoptic_segformer.launch.py", "replay_eval.launch.py",
    }


def launch_arguments(path: Path) -> dict:
    """name -> DeclareLaunchArgument of the file's description (included files' too)."""
    description = runpy.run_path(str(path))["generate_launch_description"]()
    return {argument.name: argument for argument in description.get_launch_arguments()}


@needs_launch
@pytest.mark.parametrize("path", NODE_LAUNCH_FILES, ids=lambda p: p.name)
def test_every_node_parameter_is_a_launch_argument(path: Path) -> None:
    arguments = launch_arguments(path)
    for spec in parameter_specs():
        assert spec.name in arguments, f"{path.name} has no launch argument {spec.name}"
        argument = arguments[spec.name]
        assert argument.choices == (list(spec.choices) if spec.choices else None), spec.name
        if spec.name != "model":
            default = "".join(s.perform(None) for s in argument.default_value)
            assert default == (str(spec.default).lower() if isinstance(spec.default, bool) else str(spec.default))
    model = "".join(s.perform(None) for s in arguments["model"].default_value)
    assert model in model_names()
    assert {"image", "camera_info", "namespace", "use_sim_time", "params_file", "log_level",
            "fastdds_profile", "lifecycle", "autostart"} <= set(arguments)


def test_node_executables_are_installed() -> None:
    cmake = (ROOT / "CMakeLists.txt").read_text()
    for name in ("segmentation_node", "segmentation_lifecycle_node"):
        script = ROOT / "scripts" / name
        assert os.access(script, os.X_OK) and script.read_text().startswith("#!/usr/bin/env python3")
        assert re.search(rf"install\(PROGRAMS [^)]*scripts/{name}[ )]", cmake), name
    assert "install(DIRECTORY launch config DESTINATION share/${PROJECT_NAME})" in cmake


def test_fastdds_profile_gives_large_shared_memory_segments() -> None:
    namespace = {"dds": "http://www.eprosima.com"}
    profiles = ElementTree.parse(ROOT / "config" / "fastdds_large_frames.xml").getroot()
    segment = profiles.find(".//dds:transport_descriptor[dds:type='SHM']/dds:segment_size", namespace)
    assert int(segment.text) >= 4 * 1024 * 2048 * 2, "two 1024x2048 panoptic images must fit"
    participant = profiles.find(".//dds:participant", namespace)
    assert participant.get("is_default_profile") == "true"
    assert participant.find(".//dds:useBuiltinTransports", namespace).text == "false"


@pytest.fixture(scope="module")
def node_with_params_file() -> Iterator[SegmentationNode]:
    """The real node, in its own context, with config/pem.yaml loaded by rcl."""
    context = rclpy.Context()
    args = ["--ros-args", "--params-file", str(ROOT / "config" / "pem.yaml"), "-p", "device:=cpu"]
    rclpy.init(context=context, args=args)
    node = SegmentationNode(context=context)
    yield node
    node.destroy_node()
    rclpy.shutdown(context=context)


def test_params_file_lists_every_parameter_validly(node_with_params_file: SegmentationNode) -> None:
    values = yaml.safe_load((ROOT / "config" / "pem.yaml").read_text())["/**"]["ros__parameters"]
    specs = {spec.name: spec for spec in parameter_specs()}
    assert set(values) == set(specs) - {"model", "weights", "backend", "device"}
    for name, value in values.items():
        assert node_with_params_file.get_parameter(name).value == value
