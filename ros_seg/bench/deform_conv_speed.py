"""Speed of `ros_seg.ops.deform_conv2d` against a plain convolution of the same shape."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ros_seg.bench.machine import machine_info
from ros_seg.bench.timing import latency_stats, time_once
from ros_seg.ops import deform_conv2d


def bench_deform_conv2d(
    shape: tuple[int, int, int, int] = (1, 128, 128, 256),
    kernel: int = 3,
    device: str = "cpu",
    warmup: int = 2,
    repeats: int = 10,
) -> dict[str, Any]:
    """Time the forward of `deform_conv2d` and of `F.conv2d` on the same input, interleaved.

    Args:
        shape: input (N, C, H, W); the convolution maps C to C channels.
        kernel: square kernel size; padding kernel // 2 keeps the spatial size.
        device: torch device string, e.g. "cpu" or "cuda".
        warmup: untimed calls of each op before timing.
        repeats: timed calls of each op.

    Returns:
        {"op", "shape", "kernel", "device", "deform_ms": latency stats, "conv_ms": latency stats,
        "ratio": deform p50 / conv p50, "machine"}. Offsets are uniform in [-2, 2] px, the mask uniform in [0, 1].
    """
    torch_device = torch.device(device)
    n, channels, height, width = shape
    taps = kernel * kernel
    generator = torch.Generator().manual_seed(0)
    input = torch.randn(shape, generator=generator).to(torch_device)
    weight = torch.randn(channels, channels, kernel, kernel, generator=generator) / (channels * taps) ** 0.5
    weight = weight.to(torch_device)
    bias = torch.randn(channels, generator=generator).to(torch_device)
    offset = (torch.rand(n, 2 * taps, height, width, generator=generator) * 4 - 2).to(torch_device)
    mask = torch.rand(n, taps, height, width, generator=generator).to(torch_device)
    padding = kernel // 2

    def run_deform() -> Tensor:
        return deform_conv2d(input, offset, weight, bias, padding=padding, mask=mask)

    def run_conv() -> Tensor:
        return F.conv2d(input, weight, bias, padding=padding)

    deform_ms: list[float] = []
    conv_ms: list[float] = []
    with torch.no_grad():
        for _ in range(warmup):
            run_deform()
            run_conv()
        for _ in range(repeats):
            deform_ms.append(time_once(run_deform, torch_device))
            conv_ms.append(time_once(run_conv, torch_device))
    deform = latency_stats(deform_ms)
    conv = latency_stats(conv_ms)
    return {
        "op": "deform_conv2d",
        "shape": list(shape),
        "kernel": kernel,
        "device": device,
        "deform_ms": deform,
        "conv_ms": conv,
        "ratio": round(deform["p50"] / conv["p50"], 3),
        "machine": machine_info(torch_device),
    }
