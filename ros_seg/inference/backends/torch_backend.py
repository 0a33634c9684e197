"""PyTorch eager backend: the model on CPU or CUDA, fp32 or autocast fp16/bf16."""
from __future__ import annotations

import contextlib

import torch
from torch import nn

PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


class TorchBackend:
    """Runs a MaskFormer-family model and returns the last layer's logits.

    Args:
        model: the model (moved to `device`, eval mode).
        device: where it runs.
        precision: "fp32", or "fp16"/"bf16" autocast with fp32 accumulation.
        channels_last: convolutions in NHWC memory layout (faster on GPUs).
    """

    name = "torch"

    def __init__(self, model: nn.Module, device: torch.device, precision: str = "fp32", channels_last: bool = False):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        self.device = device
        self.precision = precision
        self.channels_last = channels_last
        self.model = model.to(device).eval()
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

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
        with self._autocast():
            out = self.model(images, all_predictions=False)
        return out["pred_logits"], out["pred_masks"]
