"""PyTorch backend: the model on CPU or CUDA, fp32 or autocast fp16/bf16, eager or torch.compile'd.

With compile_mode "reduce-overhead" torch.compile also records CUDA graphs
(static shapes: one graph per input size), the fastest way to run a fixed-size
camera stream on a GPU; "max-autotune" additionally searches kernel
configurations (long first compile). Compilation happens on the first image of
each size.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")


class TorchBackend:
    """Runs a MaskFormer-family model and returns the last layer's logits.

    Args:
        model: the model (moved to `device`, eval mode).
        device: where it runs.
        precision: "fp32", or "fp16"/"bf16" autocast with fp32 accumulation.
        channels_last: convolutions in NHWC memory layout (faster on GPUs).
        compile_mode: "none" (eager), or a torch.compile mode: "default", "reduce-overhead" (with
            CUDA graphs on GPUs), "max-autotune".
    """

    name = "torch"

    def __init__(self, model: nn.Module, device: torch.device, precision: str = "fp32", channels_last: bool = False,
                 compile_mode: str = "none"):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        if compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile mode must be one of {', '.join(COMPILE_MODES)}, got {compile_mode!r}")
        self.device = device
        self.precision = precision
        self.channels_last = channels_last
        self.compile_mode = compile_mode
        self.model = model.to(device).eval()
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self._forward = self.model
        if compile_mode != "none":
            self._forward = torch.compile(self.model, mode=None if compile_mode == "default" else compile_mode,
                                          dynamic=False)

    def _autocast(self) -> contextlib.AbstractContextManager:
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    @torch.inference_mode()
    def infer(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) RGB 0..255 on the device -> class logits (B, Q, K+1), mask logits (B, Q, H'/4, W'/4)."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        graphs = self.compile_mode == "reduce-overhead"
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()  # one inference per step: earlier outputs may be reused
        with self._autocast():
            out = self._forward(images, all_predictions=False)
        if graphs:  # CUDA-graph outputs live in buffers the next replay overwrites
            return out["pred_logits"].clone(), out["pred_masks"].clone()
        return out["pred_logits"], out["pred_masks"]
