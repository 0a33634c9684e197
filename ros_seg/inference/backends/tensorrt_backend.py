"""TensorRT backend: a ros_seg engine run with ``execute_async_v3`` on torch CUDA tensors.

Engines take one input size, (1, 3, H, W) uint8 RGB; the Segmenter resizes
images to it. The engine reads the image and writes the logits in torch CUDA
memory on torch's current stream, so nothing crosses to the host here.
An engine file needs the ros_seg .onnx it was built from beside it (same stem):
that file carries the model description (config, classes).
"""
from __future__ import annotations

from pathlib import Path

import torch

from ros_seg.inference.onnx_export import INPUT_NAME, OUTPUT_NAMES, OnnxModelError, OnnxModelInfo, read_onnx_info
from ros_seg.inference.tensorrt_engine import ENGINE_PRECISIONS, engine_for, import_tensorrt, load_engine


def require_cuda(device: torch.device) -> None:
    """TensorRT engines run on NVIDIA GPUs only: a clear error for any other device."""
    if device.type != "cuda":
        raise ValueError(f"backend 'tensorrt' runs on CUDA devices only, got device {device}: use cuda or auto")


class TensorRTBackend:
    """Runs a TensorRT engine of a ros_seg model.

    Use :meth:`from_onnx` (builds or reuses a cached engine) or :meth:`from_engine`.

    Args:
        engine_path: a serialized engine.
        info: the description of the model it was built from.
        device: the CUDA device it runs on.
        precision: the precision it was built with (for reports).
    """

    name = "tensorrt"

    def __init__(self, engine_path: Path, info: OnnxModelInfo, device: torch.device, precision: str) -> None:
        require_cuda(device)
        trt = import_tensorrt()
        self.info = info
        self.device = device
        self.precision = precision
        with torch.cuda.device(device):
            self._runtime, self.engine = load_engine(engine_path)
            self.context = self.engine.create_execution_context()
        shape = tuple(self.engine.get_tensor_shape(INPUT_NAME))
        if any(d < 0 for d in shape):
            shape = tuple(self.engine.get_tensor_profile_shape(INPUT_NAME, 0)[1])  # (min, opt, max): one size
        self.input_size: tuple[int, int] = (shape[2], shape[3])
        self.context.set_input_shape(INPUT_NAME, shape)
        dtypes = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16}
        self._outputs = {
            name: (tuple(self.context.get_tensor_shape(name)), dtypes[self.engine.get_tensor_dtype(name)])
            for name in OUTPUT_NAMES
        }

    @classmethod
    def from_onnx(
        cls, onnx_path: Path, device: torch.device, precision: str, input_size: tuple[int, int] | None
    ) -> TensorRTBackend:
        """Engine of a TensorRT-flavoured ONNX export at `input_size` (a fixed-size export brings its own)."""
        if precision not in ENGINE_PRECISIONS:
            raise ValueError(f"backend 'tensorrt' precision must be one of {', '.join(ENGINE_PRECISIONS)}")
        require_cuda(device)
        info = read_onnx_info(onnx_path)
        if info.target != "tensorrt":
            raise OnnxModelError(
                f"{onnx_path} was exported for {info.target}: export it with `ros-seg export --format tensorrt`"
            )
        size = info.input_size or input_size
        if size is None:
            raise ValueError(f"{onnx_path} has a dynamic input size: give the Segmenter an input_size for the engine")
        if input_size is not None and tuple(input_size) != size:
            raise ValueError(f"{onnx_path} was exported for input size {size}, but input_size {input_size} was set")
        return cls(engine_for(onnx_path, size, precision, device), info, device, precision)

    @classmethod
    def from_engine(cls, engine_path: Path, device: torch.device) -> TensorRTBackend:
        """An engine built by ``ros-seg export --format tensorrt``; its .onnx must lie beside it."""
        onnx_path = engine_path.with_suffix(".onnx")
        if not engine_path.is_file():
            raise ValueError(f"TensorRT engine {engine_path} does not exist")
        if not onnx_path.is_file():
            raise ValueError(
                f"TensorRT engine {engine_path} needs the ONNX export it was built from at {onnx_path} "
                "(it holds the model description)"
            )
        return cls(engine_path, read_onnx_info(onnx_path), device, "engine")

    @torch.inference_mode()
    def infer(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, 3, H, W) RGB 0..255 on the device -> class logits (1, Q, K+1), mask logits (1, Q, H'/4, W'/4)."""
        size = (images.shape[2], images.shape[3])
        if images.shape[0] != 1 or size != self.input_size:
            raise ValueError(
                f"this TensorRT engine takes one {self.input_size[0]}x{self.input_size[1]} image, "
                f"got {tuple(images.shape)}: resize it (Segmenter input_size)"
            )
        image = images.round().clamp_(0, 255).to(torch.uint8).contiguous()
        outputs = {
            name: torch.empty(shape, dtype=dtype, device=self.device) for name, (shape, dtype) in self._outputs.items()
        }
        self.context.set_tensor_address(INPUT_NAME, image.data_ptr())
        for name, tensor in outputs.items():
            self.context.set_tensor_address(name, tensor.data_ptr())
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed (see the TensorRT log)")
        class_logits, mask_logits = (outputs[name].float() for name in OUTPUT_NAMES)
        return class_logits, mask_logits
