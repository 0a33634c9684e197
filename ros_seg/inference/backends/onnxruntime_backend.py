"""ONNX Runtime backend: a ros_seg .onnx export run by the CPU (or CUDA) execution provider.

The session enables every graph optimization (constant folding, conv + batch
norm + activation fusion, layout transforms) and runs `threads` intra-op
threads. On CUDA the CUDA execution provider reads and writes torch tensors in
place (I/O binding); elsewhere the image crosses to numpy once per call.

The graph takes uint8 images: the float images of the backend interface are
rounded to 0..255 (exact for images that were not resized).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ros_seg.inference.onnx_export import INPUT_NAME, OUTPUT_NAMES, OnnxModelError, OnnxModelInfo, read_onnx_info
from ros_seg.models.size_divisibility import padded_size

INSTALL_HINT = "install it with `pip install onnxruntime` (CPU) or `pip install onnxruntime-gpu` (CUDA)"


class OnnxRuntimeBackend:
    """Runs an exported model with ONNX Runtime.

    Args:
        path: a ros_seg .onnx file exported for "onnxruntime".
        device: cpu, or cuda[:N] for the CUDA execution provider.
        threads: intra-op threads (default: torch's CPU thread count).

    Raises:
        ValueError: onnxruntime is missing, the file is not a usable export, or the device has no provider.
    """

    name = "onnxruntime"
    precision = "fp32"

    def __init__(self, path: str | Path, device: torch.device, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ValueError(f"backend 'onnxruntime' needs the onnxruntime package: {INSTALL_HINT}") from None
        self.info: OnnxModelInfo = read_onnx_info(path)
        if self.info.target != "onnxruntime":
            raise OnnxModelError(
                f"{path} was exported for {self.info.target}, not onnxruntime: "
                "export it again with `ros-seg export --format onnx`"
            )
        self.device = device
        if device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ValueError(
                    f"device {device} requested, but this onnxruntime has no CUDA execution provider: "
                    "install onnxruntime-gpu, or use device cpu"
                )
            providers: list = [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for unloadable models
            raise OnnxModelError(f"onnxruntime cannot load {path}: {exc}") from None
        self.input_size = self.info.input_size

    def _check_size(self, images: torch.Tensor) -> None:
        size = (images.shape[2], images.shape[3])
        if self.input_size is not None and size != self.input_size:
            raise ValueError(
                f"this ONNX model was exported for input size {self.input_size[0]}x{self.input_size[1]}, "
                f"got {size[0]}x{size[1]}: resize the image (Segmenter input_size) or export with --dynamic"
            )

    @torch.inference_mode()
    def infer(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) RGB 0..255 on the device -> class logits (B, Q, K+1), mask logits (B, Q, H'/4, W'/4)."""
        self._check_size(images)
        pixels = images.round().clamp_(0, 255).to(torch.uint8)  # (B, 3, H, W)
        run = self._run_cuda if self.device.type == "cuda" else self._run_cpu
        outputs = [run(pixels[i : i + 1].contiguous()) for i in range(pixels.shape[0])]
        if len(outputs) == 1:
            return outputs[0]
        return torch.cat([o[0] for o in outputs]), torch.cat([o[1] for o in outputs])

    def _run_cpu(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        class_logits, mask_logits = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: image.cpu().numpy()})
        return torch.from_numpy(class_logits).to(self.device), torch.from_numpy(mask_logits).to(self.device)

    def _run_cuda(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and outputs stay in torch CUDA memory; the outputs are allocated here at their known shapes."""
        config = self.info.config
        padded = padded_size(image.shape[2:], config.input.size_divisibility)
        queries = config.transformer_decoder.num_queries
        class_logits = torch.empty(1, queries, self.info.metadata.num_classes + 1, device=self.device)
        mask_logits = torch.empty(1, queries, padded[0] // 4, padded[1] // 4, device=self.device)
        index = self.device.index or 0
        binding = self.session.io_binding()
        binding.bind_input(INPUT_NAME, "cuda", index, np.uint8, tuple(image.shape), image.data_ptr())
        for name, tensor in zip(OUTPUT_NAMES, (class_logits, mask_logits)):
            binding.bind_output(name, "cuda", index, np.float32, tuple(tensor.shape), tensor.data_ptr())
        torch.cuda.current_stream(self.device).synchronize()  # the image is written before ORT reads it
        self.session.run_with_iobinding(binding)
        return class_logits, mask_logits
