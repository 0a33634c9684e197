"""Building TensorRT engines from ros_seg ONNX exports (TensorRT 10 Python API), with engine and timing caches.

An engine is specific to its ONNX model, the TensorRT version, the GPU, the
input shape and the precision; :func:`engine_for` keys its cache on all five
(the model by content hash) and builds only on a miss. Builds share one timing
cache per TensorRT version and GPU, which makes rebuilds much faster.

FP16 and BF16 engines are built from the fp32 ONNX graph with the builder's
precision flags; TensorRT keeps layers in fp32 where that is faster or needed.
TensorRT's built-in plugins (``MultiscaleDeformableAttnPlugin_TRT``) are
registered before parsing.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import torch

from ros_seg.inference.model_cache import (
    cache_dir,
    durable_replace,
    file_digest,
    intact_entry,
    record_entry,
    text_digest,
)
from ros_seg.inference.onnx_export import INPUT_NAME

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "install TensorRT 10 on a machine with an NVIDIA GPU (`pip install tensorrt`, or NVIDIA's packages), "
    "or use backend onnxruntime or torch"
)
ENGINE_PRECISIONS = ("fp32", "fp16", "bf16")
WORKSPACE_BYTES = 4 << 30


def import_tensorrt():  # noqa: ANN201 (the module type is only known when TensorRT is installed)
    """The `tensorrt` module, or a ValueError saying what to install."""
    try:
        import tensorrt as trt
    except ImportError:
        raise ValueError(f"backend 'tensorrt' needs the tensorrt package: {INSTALL_HINT}") from None
    return trt


def _logger(trt):  # noqa: ANN001, ANN202
    logger = trt.Logger(trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")
    return logger


def _write_atomically(path: Path, data: bytes | memoryview) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        durable_replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    input_size: tuple[int, int],
    precision: str = "fp16",
    timing_cache: str | Path | None = None,
) -> Path:
    """Parse `onnx_path`, build a serialized engine for input (1, 3, H, W) and write it to `engine_path`.

    Args:
        onnx_path: a TensorRT-flavoured ros_seg ONNX export.
        engine_path: destination .engine file (written atomically).
        input_size: (H, W); must match a fixed-size export.
        precision: "fp32", "fp16" or "bf16" (builder flags).
        timing_cache: file of layer timings read before and written after the build.

    Raises:
        ValueError: TensorRT is missing, cannot parse the model, or the build fails.
    """
    if precision not in ENGINE_PRECISIONS:
        raise ValueError(f"TensorRT precision must be one of {', '.join(ENGINE_PRECISIONS)}, got {precision!r}")
    trt = import_tensorrt()
    logger = _logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ValueError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "bf16":
        config.set_flag(trt.BuilderFlag.BF16)
    shape = (1, 3, *input_size)
    declared = tuple(network.get_input(0).shape)
    if any(d < 0 for d in declared):
        profile = builder.create_optimization_profile()
        profile.set_shape(INPUT_NAME, shape, shape, shape)
        config.add_optimization_profile(profile)
    elif declared != shape:
        raise ValueError(f"{onnx_path} takes input {declared}, but an engine for {shape} was requested")
    timing_cache = Path(timing_cache) if timing_cache is not None else None
    previous = timing_cache.read_bytes() if timing_cache is not None and timing_cache.is_file() else b""
    config.set_timing_cache(config.create_timing_cache(previous), ignore_mismatch=False)
    log.info("building a TensorRT %s engine for %s at %dx%d (minutes)", precision, onnx_path, *input_size)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ValueError(f"TensorRT could not build an engine from {onnx_path} (see the TensorRT log above)")
    engine_path = Path(engine_path)
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(engine_path, memoryview(serialized))
    if timing_cache is not None:
        _write_atomically(timing_cache, memoryview(config.get_timing_cache().serialize()))
    return engine_path


def engine_for(onnx_path: str | Path, input_size: tuple[int, int], precision: str, device: torch.device) -> Path:
    """The cached engine of an ONNX export for this TensorRT, GPU, input size and precision; built on a miss."""
    trt = import_tensorrt()
    gpu = torch.cuda.get_device_name(device)
    platform = text_digest(f"{trt.__version__}|{gpu}")
    key = text_digest(f"{file_digest(onnx_path)}|{platform}|{input_size[0]}x{input_size[1]}|{precision}")
    folder = cache_dir("tensorrt")
    engine_path = folder / f"{Path(onnx_path).stem}-{input_size[0]}x{input_size[1]}-{precision}-{key}.engine"
    if not intact_entry(engine_path):
        build_engine(onnx_path, engine_path, input_size, precision, folder / f"timing-{platform}.cache")
        record_entry(engine_path)
    return engine_path


def load_engine(engine_path: str | Path) -> tuple:
    """(runtime, engine) of an engine file; the runtime must outlive the engine, so both are returned.

    Raises a clear error when the engine was built by another TensorRT version or for another GPU.
    """
    trt = import_tensorrt()
    runtime = trt.Runtime(_logger(trt))
    engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
    if engine is None:
        raise ValueError(
            f"cannot load TensorRT engine {engine_path}: it was built by another TensorRT version or for "
            "another GPU; rebuild it with `ros-seg export --format tensorrt`"
        )
    return runtime, engine
