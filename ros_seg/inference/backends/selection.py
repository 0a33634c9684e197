"""Choosing and opening an inference backend by name: "torch", "onnxruntime" or "tensorrt".

What each backend accepts as `weights`:

- torch: a ros_seg checkpoint, or None (random weights).
- onnxruntime: a .onnx file from ``ros-seg export --format onnx``; a ros_seg
  checkpoint, exported once into the cache (fixed at `input_size` when given,
  else dynamic); or None (random weights, exported to a temporary folder).
- tensorrt: a .engine file from ``ros-seg export --format tensorrt`` (with its
  .onnx beside it); a TensorRT-flavoured .onnx file; a ros_seg checkpoint; or
  None. Engines are built once per model, TensorRT version, GPU and input
  size, and cached.

The model description (config, class metadata) comes from the checkpoint or
from the metadata of the .onnx file, so exported files work on their own.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from ros_seg.inference.backends.torch_backend import TorchBackend
from ros_seg.inference.onnx_export import (
    DYNAMIC_TRACE_SIZE,
    OnnxModelError,
    OnnxModelInfo,
    cached_export,
    export_onnx,
)
from ros_seg.models.class_metadata import ClassMetadata
from ros_seg.models.load import load_model
from ros_seg.models.model_config import ModelConfig

BACKENDS = ("torch", "onnxruntime", "tensorrt")


class InferenceBackend(Protocol):
    """What the Segmenter needs from a backend."""

    name: str
    device: torch.device
    precision: str

    def infer(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) RGB 0..255 on the device -> class logits (B, Q, K+1), mask logits (B, Q, H'/4, W'/4)."""
        ...


@dataclass
class OpenedBackend:
    """A ready backend and the description of the model it runs.

    Args:
        backend: the backend.
        config: the model configuration.
        metadata: the label set.
        weights: the file the model came from (checkpoint, .onnx or .engine), None for random weights.
        input_size: (H, W) the backend requires (fixed-size exports), or None when any size works.
    """

    backend: InferenceBackend
    config: ModelConfig
    metadata: ClassMetadata
    weights: Path | None
    input_size: tuple[int, int] | None


def open_backend(
    name: str,
    model: str | None,
    weights: str | None,
    device: torch.device,
    precision: str,
    input_size: tuple[int, int] | None,
    channels_last: bool = False,
    compile_mode: str = "none",
) -> OpenedBackend:
    """Open backend `name` for a model given by name/config and/or a weights file (see the module docstring).
    channels_last and compile_mode apply to the torch backend (the others compile their own graphs)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}: use one of {', '.join(BACKENDS)}")
    if name != "torch" and compile_mode != "none":
        raise ValueError(f"compile mode {compile_mode!r} applies to the torch backend only, not to {name!r}")
    if name == "torch":
        loaded = load_model(model, weights)
        backend = TorchBackend(loaded.model, device, precision, channels_last, compile_mode)
        return OpenedBackend(backend, loaded.config, loaded.metadata, loaded.weights, None)
    if name == "onnxruntime":
        return _open_onnxruntime(model, weights, device, precision, input_size)
    return _open_tensorrt(model, weights, device, precision, input_size)


def _check_model_name(model: str | None, info: OnnxModelInfo, path: Path) -> None:
    if model is not None and not model.endswith((".yaml", ".yml")) and model != info.config.name:
        raise OnnxModelError(
            f"{path} holds model {info.config.name!r}, but model {model!r} was requested: "
            f"set the model to {info.config.name!r} or use an export of {model!r}"
        )


def _onnx_for(
    model: str | None, weights: str | None, input_size: tuple[int, int] | None, target: str, folder: Path
) -> Path:
    """The .onnx file to run: `weights` itself, a checkpoint's cached export, or a random-weight export in `folder`."""
    if weights is not None and weights.endswith(".onnx"):
        return Path(weights)
    if weights is not None:
        return cached_export(weights, model, input_size, target)
    path = folder / "model.onnx"
    export_onnx(load_model(model), path, input_size or DYNAMIC_TRACE_SIZE, dynamic=input_size is None, target=target)
    return path


def _open_onnxruntime(
    model: str | None,
    weights: str | None,
    device: torch.device,
    precision: str,
    input_size: tuple[int, int] | None,
) -> OpenedBackend:
    from ros_seg.inference.backends.onnxruntime_backend import OnnxRuntimeBackend

    if precision != "fp32":
        raise ValueError(f"backend 'onnxruntime' runs fp32 only, got precision {precision!r}")
    with tempfile.TemporaryDirectory(prefix="ros_seg_onnx_") as folder:
        path = _onnx_for(model, weights, input_size, "onnxruntime", Path(folder))
        backend = OnnxRuntimeBackend(path, device)  # the session holds the graph; the file may go
    info = backend.info
    _check_model_name(model, info, path)
    return OpenedBackend(backend, info.config, info.metadata, Path(weights) if weights else None, info.input_size)


def _open_tensorrt(
    model: str | None,
    weights: str | None,
    device: torch.device,
    precision: str,
    input_size: tuple[int, int] | None,
) -> OpenedBackend:
    from ros_seg.inference.backends.tensorrt_backend import TensorRTBackend, require_cuda
    from ros_seg.inference.tensorrt_engine import import_tensorrt

    import_tensorrt()  # say what to install, and where it runs, before exporting anything
    require_cuda(device)
    if weights is not None and weights.endswith(".engine"):
        backend = TensorRTBackend.from_engine(Path(weights), device)
    else:
        with tempfile.TemporaryDirectory(prefix="ros_seg_onnx_") as folder:
            path = _onnx_for(model, weights, input_size, "tensorrt", Path(folder))
            backend = TensorRTBackend.from_onnx(path, device, precision, input_size)
    info = backend.info
    _check_model_name(model, info, Path(weights or info.config.name))
    return OpenedBackend(backend, info.config, info.metadata, Path(weights) if weights else None, backend.input_size)
