"""The segmentation node as launch files start it: its launch arguments and the actions that run it.

The launch files of this package (launch/*.launch.py) are thin: they declare
`node_launch_arguments()` and run `segmentation_node_actions` (or, per camera,
`node_actions`) in an OpaqueFunction. Here:

- one launch argument per node parameter, made from the parameter table of
  node_parameters.py (same defaults, descriptions, `choices=` where the set of
  values is closed, so an unknown value fails at launch with the allowed ones
  listed), plus image, camera_info, namespace, use_sim_time, params_file,
  log_level and fastdds_profile;
- every value is checked at launch as the node would check it; a params_file,
  when given, is loaded after the launch arguments, so its values win;
- the Fast DDS profile shipped in share/ros_seg/config (large shared-memory
  segments) is applied through FASTRTPS_DEFAULT_PROFILES_FILE and
  FASTDDS_DEFAULT_PROFILES_FILE unless the environment names a profile already;
- a node that exits with an error shuts the whole launch down, and `ros2
  launch` then exits non-zero, so a supervisor sees it;
- `lifecycle:=true` runs the managed node (segmentation_lifecycle_node), which
  configures and activates itself unless `autostart:=false`.
"""
from __future__ import annotations

import os
import re

from ament_index_python.packages import get_package_share_directory
from launch import Action, LaunchContext
from launch.actions import DeclareLaunchArgument, RegisterEventHandler, SetEnvironmentVariable
from launch.event_handlers import OnProcessExit
from launch.events.process import ProcessExited
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from ros_seg.ros.node_parameters import BOOLEAN, ParameterSpec, checked_value, parameter_specs

PACKAGE = "ros_seg"
EXECUTABLE = "segmentation_node"
LIFECYCLE_EXECUTABLE = "segmentation_lifecycle_node"
LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")
FASTDDS_PROFILE_VARIABLES = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")
# Fast DDS 2 (Humble, Iron, Jazzy) reads the first; Fast DDS 3 (Kilted on) the second, and loads a file named
# by both twice (duplicate-profile errors), so only the one the distribution's Fast DDS reads is set.
FASTDDS_2_DISTROS = ("humble", "iron", "jazzy")
FASTDDS_PROFILE_NAME = "fastdds_large_frames.xml"
_NAMESPACE_PART = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


class LaunchArgumentError(ValueError):
    """A launch argument value the node cannot run with; the message names it and what it accepts."""


class NodeFailed(RuntimeError):
    """A segmentation node exited with an error; raised in launch's event loop, it ends the launch non-zero."""


def shipped_fastdds_profile() -> str:
    """Path of the Fast DDS profile installed with the package."""
    return os.path.join(get_package_share_directory(PACKAGE), "config", FASTDDS_PROFILE_NAME)


def _launch_text(value: bool | int | float | str) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def node_launch_arguments(**defaults: str) -> list[DeclareLaunchArgument]:
    """One launch argument per node parameter and the launch-only ones; `defaults` replace default values."""
    arguments = []
    for spec in parameter_specs():
        choices = list(spec.choices) if spec.choices else None
        description = spec.description if choices else f"{spec.description} Allowed: {spec.allowed}."
        arguments.append(DeclareLaunchArgument(spec.name, default_value=defaults.pop(spec.name, _launch_text(
            spec.default)), description=description, choices=choices))
    extra = [
        ("image", "image", "Input image topic (remaps 'image')", None),
        ("camera_info", "camera_info", "Camera info topic (remaps 'camera_info')", None),
        ("namespace", "", "Namespace of the node and its topics", None),
        ("use_sim_time", "false", "Use /clock time", list(BOOLEAN)),
        ("params_file", "", "YAML file of node parameters (/**: ros__parameters:), loaded after the launch "
         "arguments: its values win; '' for none (share/ros_seg/config/pem.yaml lists every parameter)", None),
        ("log_level", "info", "Log level of the node", list(LOG_LEVELS)),
        ("lifecycle", "false", "Run the managed (lifecycle) node: configure loads the model, activate "
         "subscribes, deactivate stops, cleanup unloads; `ros2 lifecycle` drives it", list(BOOLEAN)),
        ("autostart", "true", "With lifecycle: configure and activate at start", list(BOOLEAN)),
        ("fastdds_profile", shipped_fastdds_profile(), "Fast DDS XML profile for the node (large shared-memory "
         "segments, so big frames cross processes); '' for none. Not applied when FASTRTPS_DEFAULT_PROFILES_FILE "
         "or FASTDDS_DEFAULT_PROFILES_FILE is set", None),
    ]
    for name, default, description, choices in extra:
        arguments.append(DeclareLaunchArgument(name, default_value=defaults.pop(name, default),
                                               description=description, choices=choices))
    if defaults:
        raise ValueError(f"no launch arguments named {sorted(defaults)}")
    return arguments


def typed_value(spec: ParameterSpec, text: str) -> bool | int | float | str:
    """The launch argument `text` as the parameter's value, checked; LaunchArgumentError otherwise."""
    try:
        if isinstance(spec.default, bool):
            value = {"true": True, "false": False}[text]
        elif isinstance(spec.default, int):
            value = int(text)
        elif isinstance(spec.default, float):
            value = float(text)
        else:
            value = text
        return checked_value(spec, value)
    except (KeyError, ValueError):
        raise LaunchArgumentError(
            f"launch argument '{spec.name}' is {text!r}: allowed are {spec.allowed}"
        ) from None


def _argument(context: LaunchContext, name: str) -> str:
    return LaunchConfiguration(name).perform(context)


def _readable_file(name: str, path: str) -> str:
    if not (os.path.isfile(path) and os.access(path, os.R_OK)):
        raise LaunchArgumentError(f"launch argument '{name}' is {path!r}, which is not a readable file")
    return path


def fastdds_profile_actions(context: LaunchContext) -> list[Action]:
    """Set the Fast DDS profile variables for the launched nodes, unless the environment has one already."""
    profile = _argument(context, "fastdds_profile")
    if not profile or any(context.environment.get(name) for name in FASTDDS_PROFILE_VARIABLES):
        return []
    _readable_file("fastdds_profile", profile)
    fastdds_2 = context.environment.get("ROS_DISTRO", "") in FASTDDS_2_DISTROS
    return [SetEnvironmentVariable(FASTDDS_PROFILE_VARIABLES[0 if fastdds_2 else 1], profile)]


def checked_namespace(namespace: str) -> str:
    """`namespace` as an absolute ROS namespace ('' stays ''); LaunchArgumentError for an invalid one."""
    parts = [p for p in namespace.strip("/").split("/") if p]
    bad = [p for p in parts if not _NAMESPACE_PART.fullmatch(p)]
    if bad or "//" in namespace.strip("/"):
        raise LaunchArgumentError(
            f"namespace {namespace!r} is invalid: parts start with a letter and hold letters, digits and '_'"
        )
    return "/" + "/".join(parts) if parts else ""


def _fail_launch_on_error(event: ProcessExited, context: LaunchContext) -> None:
    if event.returncode != 0 and not context.is_shutdown:
        raise NodeFailed(f"{event.action.name} exited with code {event.returncode} (its log above says why)")


def node_actions(context: LaunchContext, namespace: str) -> list[Action]:
    """The segmentation node in `namespace` with the launch arguments as parameters, and its exit handler."""
    parameters: list = [{spec.name: typed_value(spec, _argument(context, spec.name)) for spec in parameter_specs()}]
    parameters[0]["use_sim_time"] = _argument(context, "use_sim_time") == "true"
    lifecycle = _argument(context, "lifecycle") == "true"
    if lifecycle:
        parameters[0]["autostart"] = _argument(context, "autostart") == "true"
    params_file = _argument(context, "params_file")
    if params_file:
        parameters.append(_readable_file("params_file", params_file))
    node = Node(
        package=PACKAGE,
        executable=LIFECYCLE_EXECUTABLE if lifecycle else EXECUTABLE,
        name=EXECUTABLE,
        namespace=checked_namespace(namespace),
        parameters=parameters,
        remappings=[("image", _argument(context, "image")), ("camera_info", _argument(context, "camera_info"))],
        ros_arguments=["--log-level", _argument(context, "log_level")],
        output="screen",
        emulate_tty=True,
    )
    return [node, RegisterEventHandler(OnProcessExit(target_action=node, on_exit=_fail_launch_on_error))]


def segmentation_node_actions(context: LaunchContext) -> list[Action]:
    """OpaqueFunction body of a one-node launch file: the DDS profile, then the node in `namespace`."""
    return [*fastdds_profile_actions(context), *node_actions(context, _argument(context, "namespace"))]
