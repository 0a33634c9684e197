"""Parameters of the segmentation node: declared in one place, validated at startup and on change.

Startup parameters (model, device, QoS, ...) are read-only once the node runs;
thresholds, the overlay alpha and the publish flags may change at run time.
Every parameter is declared with a description and its allowed values (numbers
with their range, so `ros2 param describe` and rqt_reconfigure show it); a bad
value raises ParameterError naming the parameter and what it accepts. The
launch files declare one launch argument per parameter from the same table.
"""
from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterValueException
from rclpy.node import Node
from rclpy.parameter import Parameter

from ros_seg.inference.backends.torch_backend import COMPILE_MODES, PRECISIONS
from ros_seg.inference.segmenter import BACKENDS, OUTPUT_RESOLUTIONS
from ros_seg.inference.weights_source import RANDOM_WEIGHTS, ZOO_PREFIX, resolve_weights
from ros_seg.models.postprocess.label_maps import SEMANTIC_RULES
from ros_seg.models.quoted_excerpt import excerpt
from ros_seg.models.registry import model_names

INPUT_QOS = ("sensor_data", "reliable")
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


class ParameterError(ValueError):
    """A parameter value the node cannot run with; the message names the parameter and its allowed values."""


@dataclass(frozen=True)
class ParameterSpec:
    """One node parameter.

    Args:
        name: parameter name.
        default: default value (its type is the parameter's type).
        description: what the parameter does, for `ros2 param describe`.
        allowed: the values it accepts, in words (shown in errors and as additional_constraints).
        accepts: True for an acceptable value.
        runtime: True when it may change while the node runs.
        choices: the whole set of values, when it is closed (strings and booleans).
        bounds: (least, largest) value of a number, declared to ROS as its range.
    """

    name: str
    default: bool | int | float | str
    description: str
    allowed: str
    accepts: Callable[[Any], bool]
    runtime: bool = False
    choices: tuple[str, ...] | None = None
    bounds: tuple[float, float] | None = None

    def descriptor(self) -> ParameterDescriptor:
        """The ROS parameter descriptor: description, allowed values, range, read-only unless runtime."""
        descriptor = ParameterDescriptor(
            description=self.description,
            additional_constraints=self.allowed,
            read_only=not self.runtime,
            dynamic_typing=True,
        )
        if self.bounds is not None and isinstance(self.default, float):
            descriptor.floating_point_range = [FloatingPointRange(from_value=float(self.bounds[0]),
                                                                  to_value=float(self.bounds[1]))]
        elif self.bounds is not None:
            descriptor.integer_range = [IntegerRange(from_value=int(self.bounds[0]), to_value=int(self.bounds[1]))]
        return descriptor


@dataclass(frozen=True)
class StartupSettings:
    """Parameters fixed for the node's life."""

    model: str
    weights: str
    backend: str
    device: str
    precision: str
    channels_last: bool
    compile_mode: str
    network_size: tuple[int, int] | None
    output_resolution: str
    max_rate_hz: float
    input_qos: str
    input_qos_depth: int
    use_compressed: bool
    max_image_pixels: int
    allow_undeclared_parameters: bool


@dataclass(frozen=True)
class RuntimeSettings:
    """Parameters that may change while the node runs; negative thresholds mean the model's default."""

    score_threshold: float
    overlap_threshold: float
    semantic_rule: str
    overlay_alpha: float
    lazy: bool
    publish_semantic: bool
    publish_panoptic: bool
    publish_segments: bool
    publish_overlay: bool


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _within(low: float, high: float, integer: bool = False) -> Callable[[Any], bool]:
    return lambda value: (_is_int(value) if integer else _is_number(value)) and low <= value <= high


BOOLEAN = ("true", "false")
MAX_RATE_HZ = 1000.0
MIN_RATE_HZ = 0.001  # a frame every 1000 s at the least; below ~1e-10 Hz the worker's wait would overflow
MAX_NETWORK_SIDE = 8192
MAX_QOS_DEPTH = 100
# 4096 x 4096: a 12 MP (4096x3000) or 4K (3840x2160) camera fits, an 8192x8192 frame (201 MB as rgb8,
# 805 MB as the float image the model takes) does not.
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096
MAX_IMAGE_PIXELS = 16384 * 16384


def _is_model(value: Any) -> bool:
    return isinstance(value, str) and (value == "" or value in model_names() or os.path.isfile(value))


def _is_weights(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    if value in ("", RANDOM_WEIGHTS) or (value.startswith(ZOO_PREFIX) and len(value) > len(ZOO_PREFIX)):
        return True
    return os.path.isfile(value) and os.access(value, os.R_OK)


def _one_of(values: tuple[str, ...]) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, str) and value in values


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _is_rate(value: Any) -> bool:
    return _is_number(value) and (value == 0 or MIN_RATE_HZ <= value <= MAX_RATE_HZ)


def parameter_specs() -> tuple[ParameterSpec, ...]:
    """Every parameter of the segmentation node, in declaration order."""
    threshold = "a number in [-1, 1] (negative: the model's default)"
    return (
        ParameterSpec("model", "pem_stdc1", "Model name or model config file; '' takes the model from the weights.",
                      f"one of {', '.join(model_names())}, a config file path, or '' with weights", _is_model),
        ParameterSpec("weights", "", "Weights: a ros_seg checkpoint file, or the .onnx / .engine export of one for "
                      "the onnxruntime / tensorrt backend; zoo:NAME for an official checkpoint pulled with `ros-seg "
                      "zoo pull NAME` (the node never downloads); '' for the model's default weights (pem_stdc1: the "
                      "demo checkpoint, trained on synthetic scenes, with a warning; other models have none); "
                      "random for random weights (tests and timing only).",
                      "'', random, zoo:NAME (ros-seg zoo list) or a readable weights file", _is_weights),
        ParameterSpec("backend", "torch", "Inference backend.", f"one of {', '.join(BACKENDS)}", _one_of(BACKENDS),
                      choices=tuple(BACKENDS)),
        ParameterSpec("device", "auto", "Device the model runs on.", "auto, cpu, cuda or cuda:N",
                      lambda v: isinstance(v, str) and _DEVICE.fullmatch(v) is not None),
        ParameterSpec("precision", "fp32", "Arithmetic precision of the model.",
                      f"one of {', '.join(PRECISIONS)}", _one_of(tuple(PRECISIONS)), choices=tuple(PRECISIONS)),
        ParameterSpec("channels_last", False, "torch backend: NHWC convolutions (faster on GPUs).", "true or false",
                      _is_bool, choices=BOOLEAN),
        ParameterSpec("compile", "none",
                      "torch backend: torch.compile mode; reduce-overhead also records CUDA graphs on GPUs (the "
                      "first frame of a size compiles, which takes minutes).",
                      f"one of {', '.join(COMPILE_MODES)}", _one_of(COMPILE_MODES), choices=tuple(COMPILE_MODES)),
        ParameterSpec("network_height", 0, "Height images are resized to before the network; 0 keeps their size.",
                      f"an integer in [0, {MAX_NETWORK_SIDE}] (0 together with network_width)",
                      _within(0, MAX_NETWORK_SIDE, integer=True), bounds=(0, MAX_NETWORK_SIDE)),
        ParameterSpec("network_width", 0, "Width images are resized to before the network; 0 keeps their size.",
                      f"an integer in [0, {MAX_NETWORK_SIDE}] (0 together with network_height)",
                      _within(0, MAX_NETWORK_SIDE, integer=True), bounds=(0, MAX_NETWORK_SIDE)),
        ParameterSpec("output_resolution", "input",
                      "Size of the published maps: the input image's, or the network's (camera_info is then "
                      "republished scaled on output_camera_info).",
                      f"one of {', '.join(OUTPUT_RESOLUTIONS)}", _one_of(OUTPUT_RESOLUTIONS),
                      choices=tuple(OUTPUT_RESOLUTIONS)),
        ParameterSpec("max_rate_hz", 0.0, "Most frames segmented per second; 0 is unlimited.",
                      f"a number in [0, {MAX_RATE_HZ:g}] (0: unlimited; otherwise at least {MIN_RATE_HZ:g})",
                      _is_rate,
                      bounds=(0, MAX_RATE_HZ)),
        ParameterSpec("input_qos", "sensor_data", "QoS of the image subscription: best effort or reliable.",
                      f"one of {', '.join(INPUT_QOS)}", _one_of(INPUT_QOS), choices=INPUT_QOS),
        ParameterSpec("input_qos_depth", 1, "History depth of the image subscription.",
                      f"an integer in [1, {MAX_QOS_DEPTH}]", _within(1, MAX_QOS_DEPTH, integer=True),
                      bounds=(1, MAX_QOS_DEPTH)),
        ParameterSpec("use_compressed", False, "Subscribe to image/compressed instead of image.",
                      "true or false", _is_bool, choices=BOOLEAN),
        ParameterSpec("max_image_pixels", DEFAULT_MAX_IMAGE_PIXELS,
                      "Pixel budget: a frame of more pixels (width x height; for PNG and JPEG as their header "
                      "declares) is refused before any copy or decode, and counted in diagnostics.",
                      f"an integer in [1, {MAX_IMAGE_PIXELS}]", _within(1, MAX_IMAGE_PIXELS, integer=True),
                      bounds=(1, MAX_IMAGE_PIXELS)),
        ParameterSpec("allow_undeclared_parameters", False,
                      "Start even when given parameters the node does not declare (a shared params file); "
                      "otherwise such a parameter (a misspelling) stops the start with the closest names.",
                      "true or false", _is_bool, choices=BOOLEAN),
        ParameterSpec("score_threshold", -1.0, "Panoptic: least score of a kept segment; negative: the model's.",
                      threshold, _within(-1, 1), runtime=True, bounds=(-1, 1)),
        ParameterSpec("overlap_threshold", -1.0,
                      "Panoptic: least visible fraction of a kept segment's mask; negative: the model's.",
                      threshold, _within(-1, 1), runtime=True, bounds=(-1, 1)),
        ParameterSpec("semantic_rule", "authors",
                      "MaskFormer semantic map: authors (mask logits resized to the image, then sigmoid: what "
                      "ros-seg eval scores) or fast (class scores at mask resolution, then resized: several times "
                      "less post-processing for large cameras, about 99% of pixels equal).",
                      f"one of {', '.join(SEMANTIC_RULES)}", _one_of(SEMANTIC_RULES), runtime=True,
                      choices=tuple(SEMANTIC_RULES)),
        ParameterSpec("overlay_alpha", 0.5, "Weight of the segment colors in the overlay image.",
                      "a number in [0, 1]", _within(0, 1), runtime=True, bounds=(0, 1)),
        ParameterSpec("lazy", True, "Run the model only while someone subscribes to an enabled output; frames "
                      "that arrive meanwhile are counted as skipped in diagnostics.", "true or false",
                      _is_bool, runtime=True, choices=BOOLEAN),
        ParameterSpec("publish_semantic", True, "Publish the semantic label image.", "true or false",
                      _is_bool, runtime=True, choices=BOOLEAN),
        ParameterSpec("publish_panoptic", True, "Publish the panoptic segment-id image.", "true or false",
                      _is_bool, runtime=True, choices=BOOLEAN),
        ParameterSpec("publish_segments", True, "Publish the segment array.", "true or false",
                      _is_bool, runtime=True, choices=BOOLEAN),
        ParameterSpec("publish_overlay", True, "Publish the overlay image (only while subscribed).", "true or false",
                      _is_bool, runtime=True, choices=BOOLEAN),
    )


def declare_node_parameters(node: Node) -> None:
    """Declare every parameter on `node`, with its description and allowed values.

    Types are checked by `read_parameters` (dynamic typing here), so a wrong
    type gets the same clear message as a wrong value and `max_rate_hz:=5`
    is accepted for a float. rclpy checks the declared ranges itself; a value
    out of range raises ParameterError with the same words as other bad values.
    """
    for spec in parameter_specs():
        try:
            node.declare_parameter(spec.name, spec.default, spec.descriptor())
        except InvalidParameterValueException as exc:
            value = str(exc).partition("(")[2].partition(")")[0]
            raise ParameterError(
                f"parameter '{spec.name}' has an invalid value {value}: allowed are {spec.allowed}"
            ) from None


def checked_value(spec: ParameterSpec, value: Any) -> Any:
    """`value` as the parameter's type; ParameterError naming the parameter and its allowed values."""
    if not spec.accepts(value):
        raise ParameterError(f"parameter '{spec.name}' has an invalid value {value!r}: allowed are {spec.allowed}")
    return float(value) if isinstance(spec.default, float) else value


def read_parameters(node: Node) -> tuple[StartupSettings, RuntimeSettings]:
    """The node's parameter values, validated; ParameterError names every bad one."""
    values: dict[str, Any] = {}
    errors = []
    for spec in parameter_specs():
        try:
            values[spec.name] = checked_value(spec, node.get_parameter(spec.name).value)
        except ParameterError as exc:
            errors.append(str(exc))
    if errors:
        raise ParameterError("; ".join(errors))
    if values["model"] == "" and values["weights"] in ("", RANDOM_WEIGHTS):
        raise ParameterError("parameter 'model' is empty and no 'weights' are given: set a model name or weights file")
    try:
        weights = resolve_weights(values["weights"], values["model"])
    except (ValueError, OSError) as exc:
        raise ParameterError(f"parameter 'weights' is {values['weights']!r}: {exc}") from None
    if weights.warning:
        node.get_logger().warning(weights.warning)
    network = (values["network_height"], values["network_width"])
    if min(network) == 0 and max(network) > 0:
        raise ParameterError(
            f"parameters 'network_height' and 'network_width' are {network}: set both > 0, or both 0 to keep the "
            "image size"
        )
    startup = StartupSettings(
        model=values["model"],
        weights=str(weights.path) if weights.path else "",
        backend=values["backend"],
        device=values["device"],
        precision=values["precision"],
        channels_last=values["channels_last"],
        compile_mode=values["compile"],
        network_size=network if min(network) > 0 else None,
        output_resolution=values["output_resolution"],
        max_rate_hz=values["max_rate_hz"],
        input_qos=values["input_qos"],
        input_qos_depth=values["input_qos_depth"],
        use_compressed=values["use_compressed"],
        max_image_pixels=values["max_image_pixels"],
        allow_undeclared_parameters=values["allow_undeclared_parameters"],
    )
    runtime = RuntimeSettings(**{f: values[f] for f in RuntimeSettings.__dataclass_fields__})
    return startup, runtime


def updated_runtime_settings(current: RuntimeSettings, changes: list[Parameter]) -> RuntimeSettings:
    """`current` with run-time parameter changes applied; ParameterError for a bad value."""
    specs = {spec.name: spec for spec in parameter_specs() if spec.runtime}
    updates = {}
    for param in changes:
        if param.name in specs:
            updates[param.name] = checked_value(specs[param.name], param.value)
    return replace(current, **updates)


def undeclared_parameters(node: Node) -> list[str]:
    """Names of the parameters given to `node` (-p, params files, overrides) that it has not declared."""
    # rclpy keeps the values given for a node in _parameter_overrides (Humble to Kilted) and drops those
    # never declared without a word; it has no public way to list them.
    return sorted(name for name in node._parameter_overrides if not node.has_parameter(name))


def refuse_undeclared_parameters(node: Node) -> None:
    """ParameterError listing each given parameter `node` has not declared, with the closest declared names."""
    declared = node.list_parameters([], 0).names
    problems = []
    for name in undeclared_parameters(node):
        close = difflib.get_close_matches(name, declared, n=3, cutoff=0.6)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        problems.append(f"{excerpt(name)}{hint}")
    if problems:
        raise ParameterError(
            f"unknown parameter{'s' if len(problems) > 1 else ''} {', '.join(problems)}: not a parameter of "
            f"{node.get_name()}; set allow_undeclared_parameters:=true to start anyway"
        )
