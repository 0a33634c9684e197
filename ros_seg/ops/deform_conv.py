"""Deformable convolution's entry point: the dispatcher and the layer.

:func:`deform_conv2d` checks its arguments, then runs the registered CUDA kernel
for CUDA tensors (:mod:`ros_seg.ops.gpu_kernels` registers our Triton kernel),
becomes one ONNX ``DeformConv`` node while ``torch.onnx.export`` traces it
(:mod:`ros_seg.ops.deform_conv_onnx`), and otherwise runs the pure-PyTorch
reference. Layouts and sampling rule: :mod:`ros_seg.ops.deform_conv_reference`
(torchvision's).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ros_seg.ops.deform_conv_onnx import DeformConv2dExport
from ros_seg.ops.deform_conv_reference import IntPair, check_arguments, deform_conv2d_reference, int_pair

DeformConv2dKernel = Callable[[Tensor, Tensor, Tensor, Tensor | None, IntPair, IntPair, IntPair, Tensor | None], Tensor]
"""A device kernel: ``(input, offset, weight, bias, stride, padding, dilation, mask) -> output``
with validated tensors and the three geometry arguments as ``(h, w)`` pairs."""

_cuda_kernel: DeformConv2dKernel | None = None


def register_cuda_kernel(kernel: DeformConv2dKernel | None) -> DeformConv2dKernel | None:
    """Make `kernel` serve :func:`deform_conv2d` for CUDA tensors (``None`` removes it); returns the previous one."""
    global _cuda_kernel
    previous, _cuda_kernel = _cuda_kernel, kernel
    return previous


def deform_conv2d(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    mask: Tensor | None = None,
) -> Tensor:
    """Modulated deformable convolution (DCNv2), layouts as ``torchvision.ops.deform_conv2d``.

    Args:
        input: ``(N, C_in, H, W)``.
        offset: ``(N, 2 * offset_groups * kh * kw, H_out, W_out)``, (dy, dx) interleaved per tap.
        weight: ``(C_out, C_in // groups, kh, kw)``.
        bias: ``(C_out,)`` or None.
        stride: int or (h, w).
        padding: int or (h, w), zero padding.
        dilation: int or (h, w).
        mask: ``(N, offset_groups * kh * kw, H_out, W_out)`` modulation, or None for all ones.

    Returns:
        ``(N, C_out, H_out, W_out)``.

    Raises:
        ValueError: a shape, dtype, device or geometry argument does not fit; the message names it.

    Runs the registered CUDA kernel for CUDA tensors when there is one, else
    :func:`deform_conv2d_reference`. While ``torch.onnx.export`` traces it, it
    becomes one ONNX ``DeformConv`` node (see :mod:`ros_seg.ops.deform_conv_onnx`).
    """
    if torch.onnx.is_in_onnx_export():
        geometry = check_arguments(input, offset, weight, bias, stride, padding, dilation, mask)
        return DeformConv2dExport.apply(
            input, weight, offset, bias, mask, geometry.stride, geometry.padding, geometry.dilation
        )
    if input.is_cuda and _cuda_kernel is not None:
        geometry = check_arguments(input, offset, weight, bias, stride, padding, dilation, mask)
        return _cuda_kernel(input, offset, weight, bias, geometry.stride, geometry.padding, geometry.dilation, mask)
    return deform_conv2d_reference(input, offset, weight, bias, stride, padding, dilation, mask)


class DeformConv2d(nn.Module):
    """Deformable convolution v2 layer holding the weight and bias; offsets and mask come per call.

    Args:
        in_channels: input channels C_in.
        out_channels: output channels C_out.
        kernel_size: int or (kh, kw).
        stride: int or (h, w).
        padding: int or (h, w), zero padding.
        dilation: int or (h, w).
        groups: convolution groups; divides both channel counts.
        bias: learn an additive bias.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if groups < 1 or in_channels % groups != 0 or out_channels % groups != 0:
            raise ValueError(
                f"DeformConv2d: groups ({groups}) must divide in_channels ({in_channels}) "
                f"and out_channels ({out_channels})"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = int_pair(kernel_size, "kernel_size", 1)
        self.stride = int_pair(stride, "stride", 1)
        self.padding = int_pair(padding, "padding", 0)
        self.dilation = int_pair(dilation, "dilation", 1)
        self.groups = groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-uniform weight and uniform bias, as ``nn.Conv2d`` initializes them."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.weight[0].numel())
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, input: Tensor, offset: Tensor, mask: Tensor | None = None) -> Tensor:
        """``(N, C_in, H, W)``, offset and optional mask as in :func:`deform_conv2d` -> ``(N, C_out, H_out, W_out)``.

        Under autocast it runs in the autocast dtype, as a convolution would.
        """
        weight, bias = self.weight, self.bias
        device_type = input.device.type
        if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):
            dtype = torch.get_autocast_dtype(device_type)
            input, offset, weight = input.to(dtype), offset.to(dtype), weight.to(dtype)
            bias = bias.to(dtype) if bias is not None else None
            mask = mask.to(dtype) if mask is not None else None
        return deform_conv2d(input, offset, weight, bias, self.stride, self.padding, self.dilation, mask)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, bias={self.bias is not None}"
        )
