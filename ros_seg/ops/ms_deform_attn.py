"""Multi-scale deformable attention's entry point: the dispatcher.

:func:`ms_deform_attn` checks its arguments, then runs the registered CUDA
kernel for CUDA tensors (:mod:`ros_seg.ops.gpu_kernels` registers our Triton
kernel), becomes the TensorRT plugin node or GridSample ops while
``torch.onnx.export`` traces it (:mod:`ros_seg.ops.ms_deform_attn_onnx`), and
otherwise runs the pure-PyTorch reference. Layouts and sampling rule:
:mod:`ros_seg.ops.ms_deform_attn_reference` (Deformable DETR's).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ros_seg.ops.ms_deform_attn_onnx import ms_deform_attn_export
from ros_seg.ops.ms_deform_attn_reference import check_arguments, ms_deform_attn_reference

MSDeformAttnKernel = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]
"""A device kernel: ``(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
-> output`` with validated tensors, the two integer tensors on the value's device."""

_cuda_kernel: MSDeformAttnKernel | None = None


def register_ms_deform_attn_kernel(kernel: MSDeformAttnKernel | None) -> MSDeformAttnKernel | None:
    """Make `kernel` serve :func:`ms_deform_attn` for CUDA tensors (``None`` removes it); returns the previous one."""
    global _cuda_kernel
    previous, _cuda_kernel = _cuda_kernel, kernel
    return previous


def ms_deform_attn(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """Multi-scale deformable attention sampling, Deformable-DETR layouts.

    Args:
        value: ``(N, S, M, D)``, the levels' tokens concatenated, split into M heads.
        spatial_shapes: ``(L, 2)`` integer ``(H, W)`` of each level; CPU or the value's device.
        level_start_index: ``(L,)`` integer start of each level in S; CPU or the value's device.
        sampling_locations: ``(N, Lq, M, L, P, 2)`` normalized ``(x, y)``; outside ``[0, 1]`` fades to zero.
            The value's dtype or float32 (keeps fp16/bf16 values from quantizing the positions).
        attention_weights: ``(N, Lq, M, L, P)``, the value's dtype or float32.

    Returns:
        ``(N, Lq, M * D)``: per query and head, the attention-weighted sum of the bilinear samples.

    Raises:
        ValueError: a shape, dtype or device does not fit; the message names the argument.

    Runs the registered CUDA kernel for CUDA tensors when there is one, else
    :func:`ms_deform_attn_reference`. While ``torch.onnx.export`` traces it, it
    becomes TensorRT's plugin node or standard ``GridSample`` ops (see
    :mod:`ros_seg.ops.ms_deform_attn_onnx`).
    """
    if torch.onnx.is_in_onnx_export():
        check_arguments(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
        return ms_deform_attn_export(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    if value.is_cuda and _cuda_kernel is not None:
        check_arguments(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
        return _cuda_kernel(
            value,
            spatial_shapes.to(value.device, non_blocking=True),
            level_start_index.to(value.device, non_blocking=True),
            sampling_locations,
            attention_weights,
        )
    return ms_deform_attn_reference(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
