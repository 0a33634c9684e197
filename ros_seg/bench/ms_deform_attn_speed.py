"""Speed of `ros_seg.ops.ms_deform_attn` at Mask2Former's encoder shapes, against the grid_sample path.

The encoder's deformable attention over the 1/8, 1/16 and 1/32 maps of an
H x W image: every token of the three levels is a query (Lq = S), 8 heads of 32
channels, 4 points per level. Timed, interleaved: the dispatcher (our Triton
kernel on a GPU where it is registered, else the pure-PyTorch reference), the
reference itself when the kernel served, and one `F.grid_sample` per level
followed by the weighted sum (`ms_deform_attn_grid_sample`, the ONNX export's
form and the usual pure-PyTorch formulation) — forward, and forward plus
backward.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ros_seg.bench.timing import time_interleaved
from ros_seg.eval.machine_info import machine_info
from ros_seg.models.pixel_decoders.msdeformattn_pixel_decoder import level_geometry
from ros_seg.ops import GPU_KERNELS, ms_deform_attn, ms_deform_attn_reference
from ros_seg.ops.ms_deform_attn_onnx import ms_deform_attn_grid_sample

HEADS, CHANNELS, POINTS, STRIDES = 8, 32, 4, (8, 16, 32)


def encoder_inputs(size: tuple[int, int], device: torch.device, generator: torch.Generator) -> list[Tensor]:
    """(value, spatial_shapes, level_start_index, sampling_locations, attention_weights) of the encoder's
    self-attention for an image of `size`, with locations spread around each query's own position."""
    shapes = [(-(-size[0] // s), -(-size[1] // s)) for s in STRIDES]
    # The integer tensors stay on the CPU, as the model keeps them (no device synchronization to read them).
    centres, spatial_shapes, level_start_index = level_geometry(shapes, torch.device("cpu"), torch.float32)
    tokens, levels = centres.shape[0], len(shapes)
    value = torch.randn(1, tokens, HEADS, CHANNELS, generator=generator)
    jitter = torch.randn(1, tokens, HEADS, levels, POINTS, 2, generator=generator) * 0.02
    locations = centres.view(1, tokens, 1, 1, 1, 2) + jitter
    weights = torch.rand(1, tokens, HEADS, levels * POINTS, generator=generator).softmax(-1)
    weights = weights.view(1, tokens, HEADS, levels, POINTS)
    return [value.to(device), spatial_shapes, level_start_index, locations.to(device), weights.to(device)]


def bench_ms_deform_attn(
    size: tuple[int, int] = (1024, 2048), device: str = "cpu", warmup: int = 2, repeats: int = 10
) -> dict[str, Any]:
    """Time the implementations (see the module docstring), interleaved.

    Returns:
        {"op", "size", "tokens", "device", "implementation" ("triton" or "reference"),
        "<name>_ms" latency stats for forward and "<name>_backward_ms" for forward + backward of each
        of "dispatch", "grid_sample" (and "reference" when the kernel served), "speedup_vs_grid_sample",
        "machine"}.
    """
    torch_device = torch.device(device)
    inputs = encoder_inputs(size, torch_device, torch.Generator().manual_seed(0))
    kernel_served = torch_device.type == "cuda" and "ms_deform_attn" in GPU_KERNELS
    ops: dict[str, Callable[..., Tensor]] = {
        "dispatch": ms_deform_attn,
        "grid_sample": lambda value, shapes, _, locations, weights: ms_deform_attn_grid_sample(
            value, shapes, locations, weights
        ),
    }
    if kernel_served:
        ops["reference"] = ms_deform_attn_reference

    def forward(op: Callable[..., Tensor]) -> Callable[[], object]:
        def run() -> object:
            with torch.no_grad():
                return op(*inputs)
        return run

    def forward_backward(op: Callable[..., Tensor]) -> Callable[[], object]:
        def run() -> None:
            value, shapes, starts, locations, weights = inputs
            leaves = [t.detach().requires_grad_() for t in (value, locations, weights)]
            op(leaves[0], shapes, starts, leaves[1], leaves[2]).sum().backward()
        return run

    runs = {f"{name}_ms": forward(op) for name, op in ops.items()}
    runs.update({f"{name}_backward_ms": forward_backward(op) for name, op in ops.items()})
    stats = time_interleaved(runs, warmup, repeats, torch_device)
    return {
        "op": "ms_deform_attn",
        "size": list(size),
        "tokens": int(inputs[0].shape[1]),
        "device": device,
        "implementation": "triton" if kernel_served else "reference",
        **stats,
        "speedup_vs_grid_sample": round(stats["grid_sample_ms"]["p50"] / stats["dispatch_ms"]["p50"], 3),
        "machine": machine_info(torch_device),
    }
