"""Speed of `ros_seg.ops.deform_conv2d` against a plain convolution of the same shape (and, on a GPU,
against the pure-PyTorch reference and torchvision's deform_conv2d when installed)."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ros_seg.bench.timing import time_interleaved
from ros_seg.eval.machine_info import machine_info
from ros_seg.ops import GPU_KERNELS, deform_conv2d, deform_conv2d_reference


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
        {"op", "shape", "kernel", "device", "implementation" (what served deform_conv2d: "triton" or
        "reference"), "deform_ms": latency stats, "conv_ms": latency stats, "ratio": deform p50 / conv p50,
        "machine"}; when the Triton kernel served, also "reference_ms" and "speedup_vs_reference", and with
        torchvision installed "torchvision_ms" and "speedup_vs_torchvision". Offsets are uniform in
        [-2, 2] px, the mask uniform in [0, 1].
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

    runs = {"deform_ms": run_deform, "conv_ms": run_conv}
    kernel_served = torch_device.type == "cuda" and "deform_conv2d" in GPU_KERNELS
    if kernel_served:
        runs["reference_ms"] = lambda: deform_conv2d_reference(input, offset, weight, bias, padding=padding, mask=mask)
        try:
            from torchvision.ops import deform_conv2d as torchvision_deform_conv2d
        except ImportError:
            torchvision_deform_conv2d = None
        if torchvision_deform_conv2d is not None:
            runs["torchvision_ms"] = lambda: torchvision_deform_conv2d(input, offset, weight, bias, padding=padding,
                                                                       mask=mask)
    with torch.no_grad():
        stats = time_interleaved(runs, warmup, repeats, torch_device)
    result = {
        "op": "deform_conv2d",
        "shape": list(shape),
        "kernel": kernel,
        "device": device,
        "implementation": "triton" if kernel_served else "reference",
        **stats,
        "ratio": round(stats["deform_ms"]["p50"] / stats["conv_ms"]["p50"], 3),
        "machine": machine_info(torch_device),
    }
    for other in ("reference", "torchvision"):
        if f"{other}_ms" in stats:
            result[f"speedup_vs_{other}"] = round(stats[f"{other}_ms"]["p50"] / stats["deform_ms"]["p50"], 3)
    return result
