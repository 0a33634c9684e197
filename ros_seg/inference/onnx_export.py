"""ONNX files of ros_seg models: export (uint8 image in, class and mask logits out) and reading them back.

The exported graph is the whole model: input ``image`` (1, 3, H, W) uint8 RGB;
outputs ``class_logits`` (1, Q, K+1) and ``mask_logits`` (1, Q, H'/4, W'/4),
where H', W' are H, W padded up to the model's size divisibility (the graph
normalizes and pads itself). Post-processing stays in
:mod:`ros_seg.models.postprocess.label_maps`, shared by every backend.

- Fixed size: the input must be exactly the exported (H, W); the Segmenter
  resizes images to it.
- Dynamic (``dynamic=True``): any H, W. The graph is traced at a size that is
  not a multiple of the divisibility, so the padding is part of it. PEM models
  only: deformable attention (Mask2Former, PRO-SCALE, Panoptic SegFormer)
  reads its feature-level shapes as numbers, so those export at a fixed size.

Deformable convolution becomes the standard ``DeformConv`` (opset 19). For
``target="tensorrt"`` multi-scale deformable attention becomes TensorRT's
``MultiscaleDeformableAttnPlugin_TRT`` node; for ``"onnxruntime"`` it stays in
standard ops. The file records the model config, class metadata, target and
input size as ONNX metadata, so an .onnx file alone is enough to segment.
ONNX Runtime 1.31 runs models of IR version 13 at most, so that is what is
written.

The TorchScript exporter (``torch.onnx.export(..., dynamo=False)``) is used:
the custom ops' ONNX forms are ``symbolic`` methods of autograd functions.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from ros_seg.inference.model_cache import (
    cache_dir,
    durable_replace,
    file_digest,
    intact_entry,
    record_entry,
    text_digest,
)
from ros_seg.models.class_metadata import ClassMetadata
from ros_seg.models.families import model_family
from ros_seg.models.load import LoadedModel, load_model
from ros_seg.models.model_config import ModelConfig
from ros_seg.models.nested_data_limits import check_nested_data
from ros_seg.models.quoted_excerpt import excerpt
from ros_seg.models.strict_config import CONFIG_LIMITS
from ros_seg.ops.deform_conv_onnx import OPSET
from ros_seg.ops.ms_deform_attn_onnx import tensorrt_plugin_export

log = logging.getLogger(__name__)

TARGETS = ("onnxruntime", "tensorrt")
INPUT_NAME = "image"
OUTPUT_NAMES = ("class_logits", "mask_logits")
MAX_IR_VERSION = 13
"""Highest ONNX IR version ONNX Runtime 1.31 loads (onnx 1.23 writes 14 by default)."""
DYNAMIC_TRACE_SIZE = (256, 512)
"""Size a dynamic export is traced at when no size is given."""
_KEY = "ros_seg."


def _import_onnx() -> ModuleType:
    """The `onnx` package (an optional dependency), or a ValueError saying how to install it."""
    try:
        import onnx
    except ImportError:
        raise ValueError(
            "ONNX export and the onnxruntime/tensorrt backends need `pip install onnx onnxruntime`"
        ) from None
    return onnx


class OnnxModelError(ValueError):
    """An .onnx file that is not a usable ros_seg model; the message says why and what to do."""


@dataclass(frozen=True)
class OnnxModelInfo:
    """What a ros_seg .onnx file holds besides the graph.

    Args:
        config: the model configuration.
        metadata: the label set.
        input_size: (H, W) the graph requires, or None when any size works (dynamic).
        target: the runtime the graph was written for ("onnxruntime" or "tensorrt").
    """

    config: ModelConfig
    metadata: ClassMetadata
    input_size: tuple[int, int] | None
    target: str


class LogitsGraph(nn.Module):
    """The exported computation: uint8 (1, 3, H, W) RGB -> (class logits, mask logits) of the last layer.

    Args:
        model: a MaskFormer-family model in eval mode (it normalizes and pads its input).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(image, all_predictions=False)
        return out["pred_logits"], out["pred_masks"]


def export_onnx(
    loaded: LoadedModel,
    out: str | Path,
    input_size: tuple[int, int],
    dynamic: bool = False,
    target: str = "onnxruntime",
) -> Path:
    """Export `loaded` to the ONNX file `out` (written atomically); returns its path.

    Args:
        loaded: the model and what describes it (see :func:`ros_seg.models.load.load_model`).
        out: destination .onnx file; parent folders are created.
        input_size: (H, W) of the input; with `dynamic`, only the size traced at.
        dynamic: accept any input height and width.
        target: "onnxruntime" (standard ops only) or "tensorrt" (TensorRT plugin nodes).

    Raises:
        ValueError: a bad target or size.
        OSError: `out` cannot be written.
    """
    onnx = _import_onnx()
    if target not in TARGETS:
        raise ValueError(f"unknown export target {target!r}: use one of {', '.join(TARGETS)}")
    if len(input_size) != 2 or min(input_size) < 1:
        raise ValueError(f"input size must be (height, width) >= 1, got {input_size}")
    config = loaded.config
    if dynamic and not model_family(config, loaded.metadata).exports_any_input_size:
        raise ValueError(
            f"{config.name} cannot be exported with a dynamic input size (its deformable attention fixes the "
            "feature-level shapes when traced): export it at a fixed size (`ros-seg export --size HxW` without "
            "--dynamic; Segmenter input_size)"
        )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    divisibility = loaded.config.input.size_divisibility
    trace_size = tuple(s + 1 if dynamic and s % divisibility == 0 else s for s in input_size)
    model = loaded.model.eval()
    device = next(model.parameters()).device
    image = torch.randint(0, 256, (1, 3, *trace_size), dtype=torch.uint8, device=device)
    flavour = tensorrt_plugin_export() if target == "tensorrt" else contextlib.nullcontext()
    dynamic_axes = {INPUT_NAME: {2: "height", 3: "width"}, OUTPUT_NAMES[1]: {2: "mask_height", 3: "mask_width"}}
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        with torch.no_grad(), flavour, warnings.catch_warnings():
            # The model's shape-dependent Python branches go the same way at every padded size; the
            # TorchScript exporter is chosen on purpose; unfoldable strided slices are left as they are.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", "You are using the legacy TorchScript-based ONNX export")
            warnings.filterwarnings("ignore", "Constant folding - Only steps=1")
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
            torch.onnx.export(
                LogitsGraph(model).eval(),  # the exporter restores the wrapper's mode to all of it afterwards
                (image,),
                tmp,
                dynamo=False,
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES),
                dynamic_axes=dynamic_axes if dynamic else None,
                autograd_inlining=False,
            )
        graph = onnx.load(tmp)
        graph.ir_version = min(graph.ir_version, MAX_IR_VERSION)
        size_text = "dynamic" if dynamic else f"{input_size[0]}x{input_size[1]}"
        onnx.helper.set_model_props(
            graph,
            {
                f"{_KEY}model_config": json.dumps(loaded.config.to_dict()),
                f"{_KEY}class_metadata": json.dumps(loaded.metadata.to_dict()),
                f"{_KEY}input_size": size_text,
                f"{_KEY}target": target,
                f"{_KEY}weights": str(loaded.weights) if loaded.weights else "random",
            },
        )
        onnx.checker.check_model(graph)
        onnx.save(graph, tmp)
        durable_replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    log.info("exported %s (%s input, target %s) to %s", loaded.config.name, size_text, target, out)
    return out


def read_onnx_info(path: str | Path) -> OnnxModelInfo:
    """The ros_seg description stored in the metadata of an exported .onnx file."""
    onnx = _import_onnx()
    path = Path(path)
    if not path.is_file():
        raise OnnxModelError(f"ONNX model {path} does not exist")
    try:
        graph = onnx.load(path, load_external_data=False)
    except Exception as exc:  # protobuf raises several types for files that are not ONNX
        raise OnnxModelError(f"cannot read ONNX model {path}: {type(exc).__name__}: {exc}") from None
    props = {p.key: p.value for p in graph.metadata_props}
    needed = [f"{_KEY}{k}" for k in ("model_config", "class_metadata", "input_size", "target")]
    if any(k not in props for k in needed):
        raise OnnxModelError(
            f"{path} is not a ros_seg ONNX export (no ros_seg metadata): export it with "
            "`ros-seg export --format onnx`"
        )
    target = props[f"{_KEY}target"]
    if target not in TARGETS:
        raise OnnxModelError(f"'{_KEY}target' in the metadata of {path} must be one of {TARGETS}, "
                             f"got {excerpt(target)}")
    try:
        config = ModelConfig.from_dict(_json_property(props, "model_config", path), source=f"{path} (model_config)")
        metadata = ClassMetadata.from_dict(_json_property(props, "class_metadata", path), source=str(path))
    except ValueError as exc:
        raise OnnxModelError(str(exc)) from None
    return OnnxModelInfo(config=config, metadata=metadata, input_size=_input_size(props, path), target=target)


MAX_INPUT_SIDE = 16384
"""Largest height or width an ONNX export may fix (an image of that size is already 800 MB of float input)."""
MAX_METADATA_CHARS = 1 << 20


def _json_property(props: dict[str, str], name: str, path: Path) -> Any:
    """The JSON value of metadata property `ros_seg.<name>`, its size and structure within limits."""
    text = props[f"{_KEY}{name}"]
    where = f"'{_KEY}{name}' in the metadata of {path}"
    if len(text) > MAX_METADATA_CHARS:
        raise OnnxModelError(f"{where} is longer than {MAX_METADATA_CHARS} characters: refused")
    try:
        value = json.loads(text)
    except RecursionError:
        raise OnnxModelError(f"{where} nests too deep: refused") from None
    except ValueError as exc:
        raise OnnxModelError(f"{where} is not valid JSON ({exc.__class__.__name__} at character "
                             f"{getattr(exc, 'pos', '?')})") from None
    check_nested_data(value, where, CONFIG_LIMITS)
    return value


def _input_size(props: dict[str, str], path: Path) -> tuple[int, int] | None:
    """The (H, W) metadata property `ros_seg.input_size` fixes, None for "dynamic"; each side in [1, MAX_INPUT_SIDE]."""
    text = props[f"{_KEY}input_size"]
    if text == "dynamic":
        return None
    parts = text.split("x")
    valid = all(p.isascii() and p.isdigit() and len(p) <= 6 and 1 <= int(p) <= MAX_INPUT_SIDE for p in parts)
    if len(parts) != 2 or not valid:
        raise OnnxModelError(f"'{_KEY}input_size' in the metadata of {path} must be 'dynamic' or HEIGHTxWIDTH with "
                             f"each side in [1, {MAX_INPUT_SIDE}], got {excerpt(text)}")
    return int(parts[0]), int(parts[1])


def cached_export(
    weights: str | Path, model: str | None, input_size: tuple[int, int] | None, target: str
) -> Path:
    """The ONNX export of a ros_seg checkpoint, from the cache or exported into it first.

    `input_size` None gives a dynamic export. The cache key covers the checkpoint's
    content, the size, the target and the torch version.
    """
    size_text = "dynamic" if input_size is None else f"{input_size[0]}x{input_size[1]}"
    key = text_digest(f"{file_digest(weights)}|{size_text}|{target}|{torch.__version__}")
    path = cache_dir("onnx") / f"{Path(weights).stem}-{size_text}-{target}-{key}.onnx"
    if not intact_entry(path):
        log.info("exporting %s to the ONNX cache (once per checkpoint, size and target)", weights)
        loaded = load_model(model, weights)
        export_onnx(loaded, path, input_size or DYNAMIC_TRACE_SIZE, dynamic=input_size is None, target=target)
        record_entry(path)
    return path
