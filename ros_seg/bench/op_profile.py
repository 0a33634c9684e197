"""Where a model's eager PyTorch time goes: convolution and matrix-multiply kernels versus everything else.

torch.profiler records the model's forward passes; each operator's self time
(time not spent in the operators it calls) is attributed once, so the shares
add up to the total. Profiling adds a little per-operator overhead, which
inflates the many small elementwise operators slightly.
"""
from __future__ import annotations

import os

import torch
from torch.profiler import ProfilerActivity, profile

from ros_seg.models.load import load_model

COMPUTE_KERNELS = frozenset(
    {
        "aten::mkldnn_convolution",
        "aten::slow_conv2d_forward",
        "aten::slow_conv_transpose2d",
        "aten::cudnn_convolution",
        "aten::cudnn_convolution_transpose",
        "aten::addmm",
        "aten::mm",
        "aten::bmm",
        "aten::baddbmm",
        "aten::_scaled_dot_product_flash_attention_for_cpu",
    }
)
"""Operators that do the convolutions and matrix multiplies themselves (not their wrappers)."""


def profile_model(model: str, size: tuple[int, int], device: str = "cpu", repeats: int = 2, top: int = 15) -> dict:
    """Profile `repeats` forward passes (after one untimed) on a random image; ms per pass and shares.

    Returns the total, the share in :data:`COMPUTE_KERNELS` and outside them,
    and the `top` operators by self time.
    """
    if repeats < 1:
        raise ValueError("profile repeats must be >= 1")
    net = load_model(model).model.to(device)
    image = torch.randint(0, 256, (1, 3, *size), device=device).float()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if image.is_cuda else [])
    with torch.inference_mode():
        net(image, all_predictions=False)
        with profile(activities=activities) as prof:
            for _ in range(repeats):
                net(image, all_predictions=False)
    self_ms = {e.key: e.self_device_time_total if image.is_cuda else e.self_cpu_time_total for e in prof.key_averages()}
    self_ms = {k: v / 1e3 / repeats for k, v in self_ms.items() if v > 0}  # us over all passes -> ms per pass
    total = sum(self_ms.values())
    compute = sum(v for k, v in self_ms.items() if k in COMPUTE_KERNELS)
    ranked = sorted(self_ms.items(), key=lambda kv: -kv[1])[:top]
    return {
        "model": model,
        "size": list(size),
        "device": device,
        "threads": torch.get_num_threads(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "total_ms": round(total, 1),
        "conv_matmul_share": round(compute / total, 3),
        "other_share": round(1 - compute / total, 3),
        "top_ops_ms": {k: round(v, 1) for k, v in ranked},
    }
