"""Modulated deformable convolution (DCNv2) as Triton kernels plus matrix products (the GPU path).

Same layouts and sampling rule as :mod:`ros_seg.ops.deform_conv` (read its
docstring; torchvision's semantics). Forward: a Triton kernel writes the
modulated bilinear samples as columns ``(N, C_in * kh * kw, H_out * W_out)``
(row ``c * kh * kw + k``), and one batched matrix product per conv group with
the weight gives the output (cuBLAS, fp32 accumulation also for fp16). Backward:
the column gradient is the weight's transpose times the output gradient; a
second kernel scatters it into the input gradient with atomic adds (float32)
and reduces it, per sample, over the offset group's channels into the offset
and mask gradients; the weight gradient is the output gradient times the
columns (recomputed rather than kept: they are the largest tensor).

One program handles a block of output pixels for one kernel tap of one offset
group and loops over that group's channels, so each sampling position is
computed once. Coordinates and blending are float32 whatever the dtype.

Needs Triton (it comes with CUDA builds of PyTorch). With ``TRITON_INTERPRET=1``
set before this module is imported, the kernels run on CPU tensors in Triton's
interpreter: how they are checked where there is no GPU.
"""
from __future__ import annotations

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU machines: the pure-PyTorch reference serves
    triton = None

IntPair = tuple[int, int]
BLOCK_PIXELS = 64
BLOCK_CHANNELS = 16


def available() -> bool:
    """Whether Triton imports (the kernels can then run on CUDA tensors, or anywhere when interpreted)."""
    return triton is not None


if triton is not None:
    from ros_seg.ops.triton_sampling import floor_split

    @triton.jit
    def _sampling(offset, mask, n, g, k, taps, offset_groups, pixels, w_out, kw, stride_h, stride_w, pad_h, pad_w,
                  dil_h, dil_w, p, p_live, HAS_MASK: tl.constexpr):
        """Per output pixel p of tap k, offset group g: flat offset index of dy, the top-left neighbour
        (y0, x0) and fractions (fy, fx) of the sampling position, whether anything is sampled (torchvision:
        nothing at or beyond -1), and the modulation."""
        tap_row = ((n * offset_groups + g) * taps + k).to(tl.int64)
        dy_index = (2 * tap_row) * pixels + p
        dy = tl.load(offset + dy_index, mask=p_live, other=0.0).to(tl.float32)
        dx = tl.load(offset + dy_index + pixels, mask=p_live, other=0.0).to(tl.float32)
        if HAS_MASK:
            modulation = tl.load(mask + tap_row * pixels + p, mask=p_live, other=0.0).to(tl.float32)
        else:
            modulation = tl.full(dy.shape, 1.0, tl.float32)
        y = p // w_out
        x = p % w_out
        py = (y * stride_h - pad_h + (k // kw) * dil_h).to(tl.float32) + dy
        px = (x * stride_w - pad_w + (k % kw) * dil_w).to(tl.float32) + dx
        y0, fy = floor_split(py)
        x0, fx = floor_split(px)
        return dy_index, y0, x0, fy, fx, p_live & (py > -1.0) & (px > -1.0), modulation

    @triton.jit
    def _corner(input, plane, height, width, yi, xi, live, c_live):
        """(BLOCK_C, BLOCK_P) float32 input values at pixels (yi, xi) of the channel planes (zero outside
        the image), their flat offsets and the mask of those read."""
        inside = live & (yi >= 0) & (yi < height) & (xi >= 0) & (xi < width)
        offset = plane[:, None] + (yi * width + xi)[None, :]
        keep = c_live[:, None] & inside[None, :]
        return tl.load(input + offset, mask=keep, other=0.0).to(tl.float32), offset, keep

    @triton.jit
    def _channel_block(c0, per_group, g, n, channels, height, width, BLOCK_C: tl.constexpr):
        """Channels c0.. of offset group g (which are real, their indices) and their planes' offsets."""
        c_local = c0 + tl.arange(0, BLOCK_C)
        c = (g * per_group + c_local).to(tl.int64)
        return c_local < per_group, c, (n * channels + c) * height * width

    @triton.jit
    def _columns_kernel(input, offset, mask, columns, channels, height, width, w_out, pixels, kw, taps,
                        offset_groups, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                        HAS_MASK: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
        p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
        g = tl.program_id(1) // taps
        k = tl.program_id(1) % taps
        n = tl.program_id(2).to(tl.int64)
        p_live = p < pixels
        _, y0, x0, fy, fx, live, modulation = _sampling(offset, mask, n, g, k, taps, offset_groups, pixels, w_out,
                                                        kw, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, p,
                                                        p_live, HAS_MASK)
        w00 = (1.0 - fy) * (1.0 - fx) * modulation
        w01 = (1.0 - fy) * fx * modulation
        w10 = fy * (1.0 - fx) * modulation
        w11 = fy * fx * modulation
        per_group = channels // offset_groups
        for c0 in range(0, per_group, BLOCK_C):
            c_live, c, plane = _channel_block(c0, per_group, g, n, channels, height, width, BLOCK_C)
            v00, _, _ = _corner(input, plane, height, width, y0, x0, live, c_live)
            v01, _, _ = _corner(input, plane, height, width, y0, x0 + 1, live, c_live)
            v10, _, _ = _corner(input, plane, height, width, y0 + 1, x0, live, c_live)
            v11, _, _ = _corner(input, plane, height, width, y0 + 1, x0 + 1, live, c_live)
            value = w00[None, :] * v00 + w01[None, :] * v01 + w10[None, :] * v10 + w11[None, :] * v11
            row = ((n * channels + c) * taps + k) * pixels
            tl.store(columns + row[:, None] + p[None, :], value.to(columns.dtype.element_ty),
                     mask=c_live[:, None] & p_live[None, :])

    @triton.jit
    def _columns_backward_kernel(input, offset, mask, grad_columns, grad_input, grad_offset, grad_mask, channels,
                                 height, width, w_out, pixels, kw, taps, offset_groups, stride_h, stride_w, pad_h,
                                 pad_w, dil_h, dil_w, HAS_MASK: tl.constexpr, BLOCK_C: tl.constexpr,
                                 BLOCK_P: tl.constexpr):
        p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
        g = tl.program_id(1) // taps
        k = tl.program_id(1) % taps
        n = tl.program_id(2).to(tl.int64)
        p_live = p < pixels
        dy_index, y0, x0, fy, fx, live, modulation = _sampling(offset, mask, n, g, k, taps, offset_groups, pixels,
                                                               w_out, kw, stride_h, stride_w, pad_h, pad_w, dil_h,
                                                               dil_w, p, p_live, HAS_MASK)
        grad_py = tl.zeros((BLOCK_P,), tl.float32)
        grad_px = tl.zeros((BLOCK_P,), tl.float32)
        grad_modulation = tl.zeros((BLOCK_P,), tl.float32)
        per_group = channels // offset_groups
        for c0 in range(0, per_group, BLOCK_C):
            c_live, c, plane = _channel_block(c0, per_group, g, n, channels, height, width, BLOCK_C)
            row = ((n * channels + c) * taps + k) * pixels
            gc = tl.load(grad_columns + row[:, None] + p[None, :], mask=c_live[:, None] & p_live[None, :],
                         other=0.0).to(tl.float32)
            v00, o00, k00 = _corner(input, plane, height, width, y0, x0, live, c_live)
            v01, o01, k01 = _corner(input, plane, height, width, y0, x0 + 1, live, c_live)
            v10, o10, k10 = _corner(input, plane, height, width, y0 + 1, x0, live, c_live)
            v11, o11, k11 = _corner(input, plane, height, width, y0 + 1, x0 + 1, live, c_live)
            gm = gc * modulation[None, :]
            tl.atomic_add(grad_input + o00, gm * ((1.0 - fy) * (1.0 - fx))[None, :], mask=k00)
            tl.atomic_add(grad_input + o01, gm * ((1.0 - fy) * fx)[None, :], mask=k01)
            tl.atomic_add(grad_input + o10, gm * (fy * (1.0 - fx))[None, :], mask=k10)
            tl.atomic_add(grad_input + o11, gm * (fy * fx)[None, :], mask=k11)
            sample = ((1.0 - fy)[None, :] * ((1.0 - fx)[None, :] * v00 + fx[None, :] * v01)
                      + fy[None, :] * ((1.0 - fx)[None, :] * v10 + fx[None, :] * v11))
            d_py = (1.0 - fx)[None, :] * (v10 - v00) + fx[None, :] * (v11 - v01)
            d_px = (1.0 - fy)[None, :] * (v01 - v00) + fy[None, :] * (v11 - v10)
            grad_modulation += tl.sum(gc * sample, axis=0)
            grad_py += tl.sum(gm * d_py, axis=0)
            grad_px += tl.sum(gm * d_px, axis=0)
        tl.store(grad_offset + dy_index, grad_py, mask=p_live)
        tl.store(grad_offset + dy_index + pixels, grad_px, mask=p_live)
        if HAS_MASK:
            tap_row = ((n * offset_groups + g) * taps + k).to(tl.int64)
            tl.store(grad_mask + tap_row * pixels + p, grad_modulation, mask=p_live)


class _Geometry:
    """Shapes and launch grid of one call."""

    def __init__(self, input: Tensor, offset: Tensor, weight: Tensor, stride: IntPair, padding: IntPair,
                 dilation: IntPair) -> None:
        self.n, self.channels, self.height, self.width = input.shape
        self.out_channels, per_group, self.kh, self.kw = weight.shape
        self.groups = self.channels // per_group
        self.taps = self.kh * self.kw
        self.offset_groups = offset.shape[1] // (2 * self.taps)
        self.h_out, self.w_out = offset.shape[2], offset.shape[3]
        self.pixels = self.h_out * self.w_out
        self.stride, self.padding, self.dilation = stride, padding, dilation

    def launch(self) -> tuple[int, int, int]:
        return (triton.cdiv(self.pixels, BLOCK_PIXELS), self.offset_groups * self.taps, self.n)

    def arguments(self) -> tuple[int, ...]:
        return (self.channels, self.height, self.width, self.w_out, self.pixels, self.kw, self.taps,
                self.offset_groups, *self.stride, *self.padding, *self.dilation)


def _columns(input: Tensor, offset: Tensor, mask: Tensor | None, geometry: _Geometry) -> Tensor:
    columns = torch.empty(geometry.n, geometry.channels * geometry.taps, geometry.pixels, dtype=input.dtype,
                          device=input.device)
    if columns.numel() > 0:
        _columns_kernel[geometry.launch()](input, offset, offset if mask is None else mask, columns,
                                           *geometry.arguments(), HAS_MASK=mask is not None,
                                           BLOCK_C=BLOCK_CHANNELS, BLOCK_P=BLOCK_PIXELS)
    return columns


def _grouped_weight(weight: Tensor, geometry: _Geometry) -> Tensor:
    """(C_out, C_in / groups, kh, kw) -> (groups, C_out / groups, C_in / groups * kh * kw)."""
    return weight.reshape(geometry.groups, geometry.out_channels // geometry.groups, -1)


class _DeformConv2dFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, offset, weight, bias, mask, stride, padding, dilation):  # noqa: ANN001
        geometry = _Geometry(input, offset, weight, stride, padding, dilation)
        columns = _columns(input, offset, mask, geometry)
        grouped = columns.view(geometry.n, geometry.groups, -1, geometry.pixels)
        output = torch.matmul(_grouped_weight(weight, geometry), grouped)  # (N, groups, C_out / groups, P)
        output = output.reshape(geometry.n, geometry.out_channels, geometry.h_out, geometry.w_out)
        if bias is not None:
            output = output + bias.view(1, -1, 1, 1)
        ctx.geometry = geometry
        ctx.has_bias = bias is not None
        ctx.save_for_backward(input, offset, weight, mask)
        return output

    @staticmethod
    def backward(ctx, grad_output):  # noqa: ANN001
        input, offset, weight, mask = ctx.saved_tensors
        geometry: _Geometry = ctx.geometry
        grad_out = grad_output.contiguous().view(geometry.n, geometry.groups, -1, geometry.pixels)
        grouped_weight = _grouped_weight(weight, geometry)
        grad_columns = torch.matmul(grouped_weight.transpose(1, 2), grad_out)  # (N, groups, C_in/g * K, P)
        grad_input = torch.zeros(input.shape, dtype=torch.float32, device=input.device)
        grad_offset = torch.zeros(offset.shape, dtype=torch.float32, device=input.device)
        grad_mask = None if mask is None else torch.zeros(mask.shape, dtype=torch.float32, device=input.device)
        if grad_columns.numel() > 0:
            _columns_backward_kernel[geometry.launch()](
                input, offset, offset if mask is None else mask, grad_columns.contiguous(), grad_input,
                grad_offset, grad_offset if grad_mask is None else grad_mask, *geometry.arguments(),
                HAS_MASK=mask is not None, BLOCK_C=BLOCK_CHANNELS, BLOCK_P=BLOCK_PIXELS,
            )
        columns = _columns(input, offset, mask, geometry).view(geometry.n, geometry.groups, -1, geometry.pixels)
        grad_weight = torch.matmul(grad_out, columns.transpose(2, 3)).sum(0).view_as(weight)
        grad_bias = grad_output.sum((0, 2, 3)) if ctx.has_bias else None
        return (grad_input.to(input.dtype), grad_offset.to(offset.dtype), grad_weight.to(weight.dtype), grad_bias,
                None if grad_mask is None else grad_mask.to(mask.dtype), None, None, None)


def deform_conv2d_triton(input: Tensor, offset: Tensor, weight: Tensor, bias: Tensor | None, stride: IntPair,
                         padding: IntPair, dilation: IntPair, mask: Tensor | None) -> Tensor:
    """The kernel for :func:`ros_seg.ops.register_cuda_kernel`: differentiable in every tensor argument."""
    return _DeformConv2dFunction.apply(
        input.contiguous(), offset.contiguous(), weight.contiguous(), bias,
        None if mask is None else mask.contiguous(), stride, padding, dilation,
    )
