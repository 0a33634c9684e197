"""Modulated deformable convolution (DCNv2) as Triton kernels plus matrix products (the GPU path).

Same layouts and sampling rule as :mod:`ros_seg.ops.deform_conv` (read its
docstring; torchvision's semantics). Forward: a Triton kernel writes the
modulated bilinear samples as columns ``(N, C_in * kh * kw, H_out * W_out)``
(row ``c * kh * kw + k``), and one batched matrix product per conv group with
the weight gives the output (cuBLAS, fp32 accumulation also for fp16). Backward:
the column gradient is the weight's transpose times the output gradient; a
second kernel scatters it into the input gradient with relaxed atomic adds
(float32; only their sum matters, so no ordering is needed) and reduces it, per
sample, over the offset group's channels into the offset and mask gradients;
the weight gradient is the output gradient times the columns (recomputed rather
than kept: they are the largest tensor). Gradients nobody asked for
(``ctx.needs_input_grad``) are not computed.

One program handles a block of output pixels for one kernel tap of one offset
group and loops over that group's channels, so each sampling position is
computed once. Coordinates and blending are float32 whatever the dtype. Input,
offset and mask are read through their strides: contiguous and channels-last
tensors are used as they are (other layouts are copied once).

Block sizes are autotuned per shape (:mod:`ros_seg.ops.triton_tuning`). Needs
Triton (it comes with CUDA builds of PyTorch). With ``TRITON_INTERPRET=1`` set
before this module is imported, the kernels run on CPU tensors in Triton's
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


def available() -> bool:
    """Whether Triton imports (the kernels can then run on CUDA tensors, or anywhere when interpreted)."""
    return triton is not None


if triton is not None:
    from ros_seg.ops.triton_sampling import floor_split
    from ros_seg.ops.triton_tuning import autotuned

    BLOCK_CONFIGS = [
        triton.Config({"BLOCK_P": 64, "BLOCK_C": 16}, num_warps=4),
        triton.Config({"BLOCK_P": 128, "BLOCK_C": 16}, num_warps=4),
        triton.Config({"BLOCK_P": 64, "BLOCK_C": 32}, num_warps=4),
    ]
    """Output pixels and channels per program: the autotuner's candidates for both kernels."""
    TUNING_KEY = ["channels", "pixels", "offset_groups", "taps"]

    @triton.jit
    def _sampling(offset, mask, n, tap, k, w_out, kw, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, off_sn,
                  off_sc, off_sh, off_sw, mask_sn, mask_sc, mask_sh, mask_sw, p, p_live, HAS_MASK: tl.constexpr):
        """Per output pixel p of kernel tap k (tap = offset group * taps + k): element offsets of dy and of the
        modulation, the top-left neighbour (y0, x0) and fractions (fy, fx) of the sampling position, whether
        anything is sampled (torchvision: nothing at or beyond -1), and the modulation."""
        y = p // w_out
        x = p % w_out
        dy_index = n * off_sn + (2 * tap) * off_sc + y * off_sh + x * off_sw
        dy = tl.load(offset + dy_index, mask=p_live, other=0.0).to(tl.float32)
        dx = tl.load(offset + dy_index + off_sc, mask=p_live, other=0.0).to(tl.float32)
        mask_index = n * mask_sn + tap * mask_sc + y * mask_sh + x * mask_sw
        if HAS_MASK:
            modulation = tl.load(mask + mask_index, mask=p_live, other=0.0).to(tl.float32)
        else:
            modulation = tl.full(dy.shape, 1.0, tl.float32)
        py = (y * stride_h - pad_h + (k // kw) * dil_h).to(tl.float32) + dy
        px = (x * stride_w - pad_w + (k % kw) * dil_w).to(tl.float32) + dx
        y0, fy = floor_split(py)
        x0, fx = floor_split(px)
        return dy_index, mask_index, y0, x0, fy, fx, p_live & (py > -1.0) & (px > -1.0), modulation

    @triton.jit
    def _corner(input, plane, height, width, in_sh, in_sw, yi, xi, live, c_live):
        """(BLOCK_C, BLOCK_P) float32 input values at pixels (yi, xi) of the channel planes (zero outside
        the image), their element offsets and the mask of those read."""
        inside = live & (yi >= 0) & (yi < height) & (xi >= 0) & (xi < width)
        offset = plane[:, None] + (yi * in_sh + xi * in_sw)[None, :]
        keep = c_live[:, None] & inside[None, :]
        return tl.load(input + offset, mask=keep, other=0.0).to(tl.float32), offset, keep

    @triton.jit
    def _corner_value(input, plane, height, width, in_sh, in_sw, yi, xi, live, c_live):
        """Only the values of :func:`_corner`."""
        value, _offset, _keep = _corner(input, plane, height, width, in_sh, in_sw, yi, xi, live, c_live)
        return value

    @triton.jit
    def _channel_block(c0, per_group, g, n, in_sn, in_sc, BLOCK_C: tl.constexpr):
        """Channels c0.. of offset group g: which are real, their indices and their planes' element offsets."""
        c_local = c0 + tl.arange(0, BLOCK_C)
        c = (g * per_group + c_local).to(tl.int64)
        return c_local < per_group, c, n * in_sn + c * in_sc

    @autotuned(BLOCK_CONFIGS, TUNING_KEY)
    @triton.jit
    def _columns_kernel(input, offset, mask, columns, channels, height, width, w_out, pixels, kw, taps,
                        offset_groups, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, in_sn, in_sc, in_sh, in_sw,
                        off_sn, off_sc, off_sh, off_sw, mask_sn, mask_sc, mask_sh, mask_sw,
                        HAS_MASK: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
        p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
        tap = tl.program_id(1)
        g = tap // taps
        k = tap % taps
        n = tl.program_id(2).to(tl.int64)
        p_live = p < pixels
        _dy, _mi, y0, x0, fy, fx, live, modulation = _sampling(
            offset, mask, n, tap, k, w_out, kw, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, off_sn, off_sc,
            off_sh, off_sw, mask_sn, mask_sc, mask_sh, mask_sw, p, p_live, HAS_MASK)
        w00 = (1.0 - fy) * (1.0 - fx) * modulation
        w01 = (1.0 - fy) * fx * modulation
        w10 = fy * (1.0 - fx) * modulation
        w11 = fy * fx * modulation
        per_group = channels // offset_groups
        for c0 in range(0, per_group, BLOCK_C):
            c_live, c, plane = _channel_block(c0, per_group, g, n, in_sn, in_sc, BLOCK_C)
            v00 = _corner_value(input, plane, height, width, in_sh, in_sw, y0, x0, live, c_live)
            v01 = _corner_value(input, plane, height, width, in_sh, in_sw, y0, x0 + 1, live, c_live)
            v10 = _corner_value(input, plane, height, width, in_sh, in_sw, y0 + 1, x0, live, c_live)
            v11 = _corner_value(input, plane, height, width, in_sh, in_sw, y0 + 1, x0 + 1, live, c_live)
            value = w00[None, :] * v00 + w01[None, :] * v01 + w10[None, :] * v10 + w11[None, :] * v11
            row = ((n * channels + c) * taps + k) * pixels
            tl.store(columns + row[:, None] + p[None, :], value.to(columns.dtype.element_ty),
                     mask=c_live[:, None] & p_live[None, :])

    @autotuned(BLOCK_CONFIGS, TUNING_KEY, reset_to_zero=["grad_input"])
    @triton.jit
    def _columns_backward_kernel(input, offset, mask, grad_columns, grad_input, grad_offset, grad_mask, channels,
                                 height, width, w_out, pixels, kw, taps, offset_groups, stride_h, stride_w, pad_h,
                                 pad_w, dil_h, dil_w, in_sn, in_sc, in_sh, in_sw, off_sn, off_sc, off_sh, off_sw,
                                 mask_sn, mask_sc, mask_sh, mask_sw, HAS_MASK: tl.constexpr,
                                 INPUT_GRAD: tl.constexpr, OFFSET_GRAD: tl.constexpr, BLOCK_C: tl.constexpr,
                                 BLOCK_P: tl.constexpr):
        """Input gradient (atomic adds, same strides as the input) when INPUT_GRAD; offset and mask gradients
        (same strides as offset and mask) when OFFSET_GRAD."""
        p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
        tap = tl.program_id(1)
        g = tap // taps
        k = tap % taps
        n = tl.program_id(2).to(tl.int64)
        p_live = p < pixels
        dy_index, mask_index, y0, x0, fy, fx, live, modulation = _sampling(
            offset, mask, n, tap, k, w_out, kw, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, off_sn, off_sc,
            off_sh, off_sw, mask_sn, mask_sc, mask_sh, mask_sw, p, p_live, HAS_MASK)
        grad_py = tl.zeros((BLOCK_P,), tl.float32)
        grad_px = tl.zeros((BLOCK_P,), tl.float32)
        grad_modulation = tl.zeros((BLOCK_P,), tl.float32)
        per_group = channels // offset_groups
        for c0 in range(0, per_group, BLOCK_C):
            c_live, c, plane = _channel_block(c0, per_group, g, n, in_sn, in_sc, BLOCK_C)
            row = ((n * channels + c) * taps + k) * pixels
            gc = tl.load(grad_columns + row[:, None] + p[None, :], mask=c_live[:, None] & p_live[None, :],
                         other=0.0).to(tl.float32)
            gm = gc * modulation[None, :]
            v00, o00, k00 = _corner(input, plane, height, width, in_sh, in_sw, y0, x0, live, c_live)
            v01, o01, k01 = _corner(input, plane, height, width, in_sh, in_sw, y0, x0 + 1, live, c_live)
            v10, o10, k10 = _corner(input, plane, height, width, in_sh, in_sw, y0 + 1, x0, live, c_live)
            v11, o11, k11 = _corner(input, plane, height, width, in_sh, in_sw, y0 + 1, x0 + 1, live, c_live)
            if INPUT_GRAD:
                tl.atomic_add(grad_input + o00, gm * ((1.0 - fy) * (1.0 - fx))[None, :], mask=k00, sem="relaxed")
                tl.atomic_add(grad_input + o01, gm * ((1.0 - fy) * fx)[None, :], mask=k01, sem="relaxed")
                tl.atomic_add(grad_input + o10, gm * (fy * (1.0 - fx))[None, :], mask=k10, sem="relaxed")
                tl.atomic_add(grad_input + o11, gm * (fy * fx)[None, :], mask=k11, sem="relaxed")
            if OFFSET_GRAD:
                sample = ((1.0 - fy)[None, :] * ((1.0 - fx)[None, :] * v00 + fx[None, :] * v01)
                          + fy[None, :] * ((1.0 - fx)[None, :] * v10 + fx[None, :] * v11))
                d_py = (1.0 - fx)[None, :] * (v10 - v00) + fx[None, :] * (v11 - v01)
                d_px = (1.0 - fy)[None, :] * (v01 - v00) + fy[None, :] * (v11 - v10)
                grad_modulation += tl.sum(gc * sample, axis=0)
                grad_py += tl.sum(gm * d_py, axis=0)
                grad_px += tl.sum(gm * d_px, axis=0)
        if OFFSET_GRAD:
            tl.store(grad_offset + dy_index, grad_py, mask=p_live)
            tl.store(grad_offset + dy_index + off_sc, grad_px, mask=p_live)
            if HAS_MASK:
                tl.store(grad_mask + mask_index, grad_modulation, mask=p_live)


class _Geometry:
    """Shapes, strides and launch grid of one call (input, offset and mask already in a layout the kernels read)."""

    def __init__(self, input: Tensor, offset: Tensor, mask: Tensor | None, weight: Tensor, stride: IntPair,
                 padding: IntPair, dilation: IntPair) -> None:
        self.n, self.channels, self.height, self.width = input.shape
        self.out_channels, per_group, self.kh, self.kw = weight.shape
        self.groups = self.channels // per_group
        self.taps = self.kh * self.kw
        self.group_rows = per_group * self.taps  # column rows per conv group
        self.offset_groups = offset.shape[1] // (2 * self.taps)
        self.h_out, self.w_out = offset.shape[2], offset.shape[3]
        self.pixels = self.h_out * self.w_out
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.strides = (*input.stride(), *offset.stride(), *(offset if mask is None else mask).stride())

    def grid(self, meta: dict) -> tuple[int, int, int]:
        return (triton.cdiv(self.pixels, meta["BLOCK_P"]), self.offset_groups * self.taps, self.n)

    def arguments(self) -> tuple[int, ...]:
        return (self.channels, self.height, self.width, self.w_out, self.pixels, self.kw, self.taps,
                self.offset_groups, *self.stride, *self.padding, *self.dilation, *self.strides)


def _readable(tensor: Tensor) -> Tensor:
    """The tensor itself when the kernels can index it through its strides (contiguous or channels-last),
    else a contiguous copy."""
    if tensor.is_contiguous() or (tensor.dim() == 4 and tensor.is_contiguous(memory_format=torch.channels_last)):
        return tensor
    return tensor.contiguous()


def _columns(input: Tensor, offset: Tensor, mask: Tensor | None, geometry: _Geometry) -> Tensor:
    columns = torch.empty(geometry.n, geometry.channels * geometry.taps, geometry.pixels, dtype=input.dtype,
                          device=input.device)
    if columns.numel() > 0:
        _columns_kernel[geometry.grid](input, offset, offset if mask is None else mask, columns,
                                       *geometry.arguments(), HAS_MASK=mask is not None)
    return columns


def _grouped_weight(weight: Tensor, geometry: _Geometry) -> Tensor:
    """(C_out, C_in / groups, kh, kw) -> (groups, C_out / groups, C_in / groups * kh * kw)."""
    return weight.reshape(geometry.groups, geometry.out_channels // geometry.groups, -1)


def _input_gradients(input: Tensor, offset: Tensor, mask: Tensor | None, grad_columns: Tensor,
                     geometry: _Geometry, input_grad: bool, offset_grad: bool) -> tuple:
    """Float32 gradients of input, offset and mask from the column gradient (None where not wanted). Each
    has its tensor's strides, which the kernel indexes with the tensor's own."""
    grad_input = torch.zeros_like(input, dtype=torch.float32) if input_grad else None
    grad_offset = torch.zeros_like(offset, dtype=torch.float32) if offset_grad else None
    grad_mask = torch.zeros_like(mask, dtype=torch.float32) if offset_grad and mask is not None else None
    if grad_columns.numel() > 0 and (input_grad or offset_grad):
        spare = torch.empty(1, dtype=torch.float32, device=input.device)  # for buffers a variant never touches
        _columns_backward_kernel[geometry.grid](
            input, offset, offset if mask is None else mask, grad_columns,
            spare if grad_input is None else grad_input, spare if grad_offset is None else grad_offset,
            spare if grad_mask is None else grad_mask, *geometry.arguments(), HAS_MASK=mask is not None,
            INPUT_GRAD=input_grad, OFFSET_GRAD=offset_grad,
        )
    return grad_input, grad_offset, grad_mask


class _DeformConv2dFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, offset, weight, bias, mask, stride, padding, dilation):  # noqa: ANN001
        geometry = _Geometry(input, offset, mask, weight, stride, padding, dilation)
        columns = _columns(input, offset, mask, geometry)
        grouped = columns.view(geometry.n, geometry.groups, geometry.group_rows, geometry.pixels)
        output = torch.matmul(_grouped_weight(weight, geometry), grouped)  # (N, groups, C_out / groups, P)
        output = output.reshape(geometry.n, geometry.out_channels, geometry.h_out, geometry.w_out)
        if bias is not None:
            output = output + bias.view(1, -1, 1, 1)
        ctx.geometry = geometry
        ctx.save_for_backward(input, offset, weight, mask)
        return output

    @staticmethod
    def backward(ctx, grad_output):  # noqa: ANN001
        input, offset, weight, mask = ctx.saved_tensors
        geometry: _Geometry = ctx.geometry
        needs_input, needs_offset, needs_weight, needs_bias, needs_mask = ctx.needs_input_grad[:5]
        grad_out = grad_output.contiguous().view(geometry.n, geometry.groups, geometry.out_channels // geometry.groups,
                                                 geometry.pixels)
        grad_input = grad_offset = grad_weight = grad_bias = grad_mask = None
        if needs_input or needs_offset or needs_mask:
            grad_columns = torch.matmul(_grouped_weight(weight, geometry).transpose(1, 2), grad_out)
            grad_input, grad_offset, grad_mask = _input_gradients(
                input, offset, mask, grad_columns.contiguous(), geometry, needs_input, needs_offset or needs_mask)
        if needs_weight:
            columns = _columns(input, offset, mask, geometry).view(geometry.n, geometry.groups, geometry.group_rows,
                                                                   geometry.pixels)
            grad_weight = torch.matmul(grad_out, columns.transpose(2, 3)).sum(0).view_as(weight).to(weight.dtype)
        if needs_bias:
            grad_bias = grad_output.sum((0, 2, 3))
        return (
            grad_input.to(input.dtype) if needs_input else None,
            grad_offset.to(offset.dtype) if needs_offset else None,
            grad_weight,
            grad_bias,
            grad_mask.to(mask.dtype) if needs_mask else None,
            None, None, None,
        )


def deform_conv2d_triton(input: Tensor, offset: Tensor, weight: Tensor, bias: Tensor | None, stride: IntPair,
                         padding: IntPair, dilation: IntPair, mask: Tensor | None) -> Tensor:
    """The kernel for :func:`ros_seg.ops.register_cuda_kernel`: differentiable in every tensor argument.
    Contiguous and channels-last input, offset and mask are read in place."""
    return _DeformConv2dFunction.apply(
        _readable(input), _readable(offset), weight.contiguous(), bias,
        None if mask is None else _readable(mask), stride, padding, dilation,
    )
