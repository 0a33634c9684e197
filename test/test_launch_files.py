"""Static checks of the launch files (the `launch` packages are not installable here) and of config/pem.yaml.

The launch files are read as Python syntax trees: they may use only the
launch API names listed below, every file, executable, parameter and launch
configuration they name must exist, and the node must subscribe the topics
they remap. config/pem.yaml is loaded by rcl into a real node.
"""
from __future__ import annotations

import ast
import importlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import rclpy
import yaml

from ros_seg.ros.node_parameters import parameter_specs
from ros_seg.ros.segmentation_node import SegmentationNode

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.py"))
# The documented launch API these files may use (module -> names).
LAUNCH_API = {
    "launch": {"LaunchDescription", "LaunchContext"},
    "launch.actions": {
        "DeclareLaunchArgument",
        "IncludeLaunchDescription",
        "GroupAction",
        "OpaqueFunction",
        "ExecuteProcess",
        "TimerAction",
        "RegisterEventHandler",
        "Shutdown",
    },
    "launch.event_handlers": {"OnProcessExit"},
    "launch.conditions": {"IfCondition", "UnlessCondition"},
    "launch.substitutions": {"LaunchConfiguration"},
    "launch.launch_description_sources": {"PythonLaunchDescriptionSource"},
    "launch_ros.actions": {"Node"},
    "launch_ros.parameter_descriptions": {"ParameterValue"},
}
PEM_ARGUMENTS = {"model", "weights", "backend", "device", "image", "namespace", "use_sim_time", "params_file"}


def tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def calls(module: ast.Module, name: str) -> list[ast.Call]:
    """Calls of `name(...)` (a plain name) in the module."""
    return [
        node for node in ast.walk(module)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == name
    ]


def keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def declared_arguments(path: Path) -> dict[str, str]:
    """Launch arguments a file declares -> default value ('' when none)."""
    declared = {}
    for call in calls(tree(path), "DeclareLaunchArgument"):
        default = keyword(call, "default_value")
        declared[ast.literal_eval(call.args[0])] = default.value if isinstance(default, ast.Constant) else ""
    return declared


def included_files(path: Path) -> list[Path]:
    """Launch files a file includes (os.path.join(share, "launch", NAME))."""
    return [ROOT / p for p in share_paths(path) if p.startswith("launch/")]


def share_paths(path: Path) -> list[str]:
    """Paths inside the package share a file names through os.path.join(share, ...)."""
    paths = []
    for node in ast.walk(tree(path)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "join"
                and node.args and isinstance(node.args[0], ast.Name) and node.args[0].id == "share"):
            paths.append("/".join(ast.literal_eval(a) for a in node.args[1:]))
    return paths


def test_launch_files_exist() -> None:
    assert {p.name for p in LAUNCH_FILES} >= {
        "pem.launch.py", "segmentation.launch.py", "multi_camera.launch.py", "proscale.launch.py",
        "panoptic_segformer.launch.py", "replay_eval.launch.py",
    }


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_imports_are_the_launch_api_or_importable(path: Path) -> None:
    module = tree(path)
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in module.body)
    for node in ast.walk(module):
        if isinstance(node, ast.ImportFrom) and node.module in LAUNCH_API:
            unknown = {a.name for a in node.names} - LAUNCH_API[node.module]
            assert not unknown, f"{path.name}: {unknown} not in {node.module}'s API"
        elif isinstance(node, ast.ImportFrom):
            imported = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(imported, alias.name), f"{path.name}: {node.module}.{alias.name} is missing"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_named_files_exist_and_are_installed(path: Path) -> None:
    installed = re.search(r"install\(DIRECTORY ([\w ]+) DESTINATION share/", (ROOT / "CMakeLists.txt").read_text())
    assert installed, "CMakeLists.txt installs no directories to share/"
    for name in share_paths(path):
        assert (ROOT / name).is_file(), f"{path.name} names {name}, which does not exist"
        assert name.split("/")[0] in installed.group(1).split(), f"{name} is not installed to share/ros_seg"


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_configurations_are_declared(path: Path) -> None:
    declared = set(declared_arguments(path))
    for included in included_files(path):
        declared |= set(declared_arguments(included))
    used = {ast.literal_eval(c.args[0]) for c in calls(tree(path), "LaunchConfiguration")}
    assert used <= declared, f"{path.name} uses undeclared launch arguments {used - declared}"


def test_pem_launch_arguments() -> None:
    pem = ROOT / "launch" / "pem.launch.py"
    arguments = declared_arguments(pem)
    for included in included_files(pem):
        arguments = declared_arguments(included) | arguments
    assert PEM_ARGUMENTS <= set(arguments)
    assert arguments["model"] == "pem_stdc1"


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_default_models_exist(path: Path) -> None:
    from ros_seg.models.registry import model_names

    default = declared_arguments(path).get("model")
    if default is not None:
        assert default in model_names(), f"{path.name}: default model {default!r} has no config"


def test_node_executable_exists_and_is_installed() -> None:
    executables = {
        ast.literal_eval(keyword(call, "executable"))
        for path in LAUNCH_FILES for call in calls(tree(path), "Node")
    }
    assert executables == {"segmentation_node"}
    cmake = (ROOT / "CMakeLists.txt").read_text()
    for name in executables:
        script = ROOT / "scripts" / name
        assert script.is_file() and os.access(script, os.X_OK)
        assert script.read_text().startswith("#!/usr/bin/env python3")
        assert f"install(PROGRAMS scripts/{name} DESTINATION lib/${{PROJECT_NAME}})" in cmake
        colcon_install = ROOT / "install" / "ros_seg" / "lib" / "ros_seg"
        if colcon_install.is_dir():
            assert (colcon_install / name).exists(), "re-run scripts/setup.sh to install the executable"


def node_parameter_dicts() -> list[ast.Dict]:
    found = []
    for path in LAUNCH_FILES:
        for call in calls(tree(path), "Node"):
            parameters = keyword(call, "parameters")
            found += [d for d in ast.walk(parameters) if isinstance(d, ast.Dict)]
    return found


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


def test_parameters_named_by_launch_files_are_declared(node_with_params_file: SegmentationNode) -> None:
    names = {ast.literal_eval(k) for d in node_parameter_dicts() for k in d.keys}
    assert names >= {"model", "weights", "backend", "device", "use_sim_time"}
    for name in names:
        assert node_with_params_file.has_parameter(name), f"the node has no parameter {name!r}"


def test_remapped_topics_are_the_nodes(node_with_params_file: SegmentationNode) -> None:
    remapped = set()
    for path in LAUNCH_FILES:
        for call in calls(tree(path), "Node"):
            remapped |= {ast.literal_eval(pair.elts[0]) for pair in keyword(call, "remappings").elts}
    subscribed = {s.topic_name for s in node_with_params_file.subscriptions}
    assert {f"/{name}" for name in remapped} <= subscribed


def test_params_file_values_are_valid(node_with_params_file: SegmentationNode) -> None:
    values = yaml.safe_load((ROOT / "config" / "pem.yaml").read_text())["/**"]["ros__parameters"]
    specs = {spec.name: spec for spec in parameter_specs()}
    for name, value in values.items():
        assert name in specs, f"config/pem.yaml sets unknown parameter {name!r}"
        assert node_with_params_file.get_parameter(name).value == value
