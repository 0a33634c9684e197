"""Modulated deformable convolution (DCNv2): semantics and the pure-PyTorch reference.

Zhu, Hu, Lin, Dai, "Deformable ConvNets v2: More Deformable, Better Results",
CVPR 2019. Every kernel tap samples the input at a learned fractional position
(bilinear interpolation) and is scaled by a learned modulation scalar.

Layouts and semantics are those of ``torchvision.ops.deform_conv2d``:

- input  ``(N, C_in, H, W)``
- offset ``(N, 2 * offset_groups * kh * kw, H_out, W_out)``; for offset group
  ``g`` and kernel tap ``k`` (row-major over ``kh, kw``) channel
  ``2 * (g * kh * kw + k)`` is ``dy`` and the next one is ``dx``.
- mask   ``(N, offset_groups * kh * kw, H_out, W_out)`` or ``None`` (all ones);
  channel ``g * kh * kw + k``.
- weight ``(C_out, C_in // groups, kh, kw)``; ``groups = C_in // weight.shape[1]``.
- bias   ``(C_out,)`` or ``None``.
- output ``(N, C_out, H_out, W_out)`` with
  ``H_out = (H + 2 * pad_h - dil_h * (kh - 1) - 1) // stride_h + 1`` (same for W).

Offset group ``g`` moves the input channels ``[g * C_in / offset_groups, (g + 1) *
C_in / offset_groups)``. Tap ``(i, j)`` of output pixel ``(y, x)`` samples
``py = y * stride_h - pad_h + i * dil_h + dy`` and
``px = x * stride_w - pad_w + j * dil_w + dx``. A sample with ``py <= -1``,
``py >= H``, ``px <= -1`` or ``px >= W`` is zero; otherwise each of its four
bilinear corners counts with its bilinear weight when it lies in the image and
as zero when it does not.

The reference gathers the four corners of every tap with ``embedding_bag`` (a
fused gather and weighted sum, differentiable in the table and in the
per-sample weights, with the mask folded into those weights) straight into a
channels-last column buffer ``(N, H_out, W_out, kh * kw * C_in)``, then
contracts it with the weight as a 1x1 convolution (oneDNN on CPU, far faster
there than a plain matmul). Without autograd this runs in bands of output rows,
so peak memory stays well below the full column buffer; with autograd the
column buffer is kept for the weight gradient.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

IntPair = tuple[int, int]
_BAND_ELEMENTS = 1 << 21
"""Column-buffer elements per band of output rows (8 MiB in float32)."""


class _Geometry(NamedTuple):
    """Validated convolution geometry, every pair as (h, w)."""

    kernel: IntPair
    stride: IntPair
    padding: IntPair
    dilation: IntPair
    groups: int
    offset_groups: int
    out_size: IntPair


def int_pair(value: int | tuple[int, int], name: str, minimum: int) -> IntPair:
    """An int or a pair of ints as an (h, w) pair, each at least `minimum`."""
    pair = (value, value) if isinstance(value, int) else tuple(value) if isinstance(value, (tuple, list)) else ()
    if len(pair) != 2 or not all(isinstance(v, int) and v >= minimum for v in pair):
        raise ValueError(f"deform_conv2d: {name} must be an int >= {minimum} or a pair of them, got {value!r}")
    return pair  # type: ignore[return-value]


def check_arguments(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: int | tuple[int, int],
    padding: int | tuple[int, int],
    dilation: int | tuple[int, int],
    mask: Tensor | None,
) -> _Geometry:
    """Check every shape, dtype and device; derive groups, offset groups and the output size."""
    stride_hw = int_pair(stride, "stride", 1)
    padding_hw = int_pair(padding, "padding", 0)
    dilation_hw = int_pair(dilation, "dilation", 1)
    if input.dim() != 4:
        raise ValueError(f"deform_conv2d: input must be (N, C_in, H, W), got shape {tuple(input.shape)}")
    if weight.dim() != 4 or min(weight.shape) == 0:
        raise ValueError(
            f"deform_conv2d: weight must be (C_out, C_in // groups, kh, kw), got shape {tuple(weight.shape)}"
        )
    n, c_in, height, width = input.shape
    c_out, c_per_group, kh, kw = weight.shape
    if c_in % c_per_group != 0 or c_out % (c_in // c_per_group) != 0:
        raise ValueError(
            f"deform_conv2d: weight shape {tuple(weight.shape)} does not fit input channels {c_in}: "
            f"weight.shape[1] must divide C_in, and C_out must be divisible by groups = C_in // weight.shape[1]"
        )
    groups = c_in // c_per_group
    h_out = (height + 2 * padding_hw[0] - dilation_hw[0] * (kh - 1) - 1) // stride_hw[0] + 1
    w_out = (width + 2 * padding_hw[1] - dilation_hw[1] * (kw - 1) - 1) // stride_hw[1] + 1
    if h_out <= 0 or w_out <= 0:
        raise ValueError(
            f"deform_conv2d: input of spatial size {(height, width)} is too small for kernel {(kh, kw)} "
            f"with padding {padding_hw} and dilation {dilation_hw} (output size {(h_out, w_out)})"
        )
    taps = kh * kw
    if offset.dim() != 4 or offset.shape[1] == 0 or offset.shape[1] % (2 * taps) != 0:
        raise ValueError(
            f"deform_conv2d: offset must be (N, 2 * offset_groups * {kh} * {kw}, {h_out}, {w_out}), "
            f"got shape {tuple(offset.shape)}"
        )
    offset_groups = offset.shape[1] // (2 * taps)
    if tuple(offset.shape) != (n, 2 * offset_groups * taps, h_out, w_out):
        raise ValueError(
            f"deform_conv2d: offset must be (N, 2 * offset_groups * kh * kw, H_out, W_out) = "
            f"{(n, 2 * offset_groups * taps, h_out, w_out)}, got shape {tuple(offset.shape)}"
        )
    if c_in % offset_groups != 0:
        raise ValueError(
            f"deform_conv2d: offset has {offset_groups} offset groups (offset.shape[1] = {offset.shape[1]}), "
            f"which must divide the {c_in} input channels"
        )
    if mask is not None and tuple(mask.shape) != (n, offset_groups * taps, h_out, w_out):
        raise ValueError(
            f"deform_conv2d: mask must be (N, offset_groups * kh * kw, H_out, W_out) = "
            f"{(n, offset_groups * taps, h_out, w_out)}, got shape {tuple(mask.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (c_out,):
        raise ValueError(f"deform_conv2d: bias must be (C_out,) = ({c_out},), got shape {tuple(bias.shape)}")
    if not input.is_floating_point():
        raise ValueError(f"deform_conv2d: input must be a floating-point tensor, got {input.dtype}")
    for name, tensor in (("offset", offset), ("weight", weight), ("bias", bias), ("mask", mask)):
        if tensor is not None and (tensor.dtype != input.dtype or tensor.device != input.device):
            raise ValueError(
                f"deform_conv2d: {name} must have the input's dtype and device ({input.dtype}, {input.device}), "
                f"got ({tensor.dtype}, {tensor.device})"
            )
    return _Geometry((kh, kw), stride_hw, padding_hw, dilation_hw, groups, offset_groups, (h_out, w_out))


def _corners(
    combine: Callable[[Tensor, Tensor], Tensor], y_pair: tuple[Tensor, Tensor], x_pair: tuple[Tensor, Tensor]
) -> Tensor:
    """Two (N, og, K, Ho, Wo) row terms and two column terms -> (N, Ho, Wo, og, K, 4) of combine(row, column).

    Corners run (top-left, top-right, bottom-left, bottom-right); the stack writes them channels-last.
    """
    return torch.stack([combine(y, x).permute(0, 3, 4, 1, 2) for y in y_pair for x in x_pair], dim=-1)


def _bilinear_corners(
    offset: Tensor, mask: Tensor | None, geometry: _Geometry, height: int, width: int
) -> tuple[Tensor, Tensor]:
    """Flat input-pixel indices and modulated bilinear weights of the four corners of every sample.

    Returns ``(pixels, weights)``, both ``(N, H_out, W_out, offset_groups, kh * kw, 4)``, corners
    ordered (top-left, top-right, bottom-left, bottom-right). ``pixels`` indexes the rows of the
    input viewed as ``(N * H * W, C_in)``; a corner outside the image is clamped to an edge pixel
    and weighs zero. Coordinates are computed in at least float32, planar (the output pixels
    innermost) so that every elementwise op runs over long contiguous rows.
    """
    n = offset.shape[0]
    kh, kw = geometry.kernel
    taps = kh * kw
    h_out, w_out = geometry.out_size
    dtype = torch.promote_types(offset.dtype, torch.float32)
    device = offset.device
    tap_y, tap_x = torch.meshgrid(
        torch.arange(kh, device=device, dtype=dtype) * geometry.dilation[0],
        torch.arange(kw, device=device, dtype=dtype) * geometry.dilation[1],
        indexing="ij",
    )
    out_y, out_x = torch.meshgrid(
        torch.arange(h_out, device=device, dtype=dtype) * geometry.stride[0] - geometry.padding[0],
        torch.arange(w_out, device=device, dtype=dtype) * geometry.stride[1] - geometry.padding[1],
        indexing="ij",
    )
    tap_yx = torch.stack((tap_y.reshape(taps), tap_x.reshape(taps)), dim=1).view(taps, 2, 1, 1)  # (K, 2, 1, 1)
    undeformed = tap_yx + torch.stack((out_y, out_x))  # (K, 2, Ho, Wo)
    # (N, og * K * 2, Ho, Wo) -> (N, og, K, 2, Ho, Wo); dim 3 is (dy, dx), then (py, px)
    position = offset.reshape(n, geometry.offset_groups, taps, 2, h_out, w_out).to(dtype) + undeformed

    floor = position.detach().floor()
    frac = position - floor  # carries the gradient w.r.t. the offset
    ceil = floor + 1
    last = torch.tensor([height - 1, width - 1], device=device, dtype=dtype).view(2, 1, 1)  # per (y, x) axis
    first = torch.clamp(floor, torch.zeros_like(last), last)  # neighbour at floor, clamped into the image
    second = torch.clamp(ceil, torch.zeros_like(last), last)  # neighbour at floor + 1, clamped
    # torchvision: a sample with py <= -1 or px <= -1 (or >= H, W, where no neighbour is inside) is zero.
    first_weight = (1 - frac) * (first == floor)  # (N, og, K, 2, Ho, Wo)
    second_weight = frac * ((second == ceil) & (position.detach() > -1))
    top, left = first_weight.unbind(3)  # (N, og, K, Ho, Wo) each
    bottom, right = second_weight.unbind(3)
    if mask is not None:
        modulation = mask.reshape(n, geometry.offset_groups, taps, h_out, w_out).to(dtype)
        top, bottom = top * modulation, bottom * modulation
    weights = _corners(torch.mul, (top, bottom), (left, right))

    first_index, second_index = first.long(), second.long()
    image_start = torch.arange(n, device=device).view(n, 1, 1, 1, 1) * (height * width)  # (N, 1, 1, 1, 1)
    top_row = torch.add(image_start, first_index[:, :, :, 0], alpha=width)
    bottom_row = torch.add(image_start, second_index[:, :, :, 0], alpha=width)
    pixels = _corners(torch.add, (top_row, bottom_row), (first_index[:, :, :, 1], second_index[:, :, :, 1]))
    return pixels, weights


def _to_column_order(per_offset_group: Tensor, chunks: int, groups: int) -> Tensor:
    """(N, Ho, Wo, og, K, 4) -> (N, Ho, Wo, groups, K, chunks // groups, 4): one row per channel chunk.

    The input channels are cut into `chunks` equal slices, each inside one offset group and one
    conv group; chunk ``c`` belongs to offset group ``c // (chunks // og)``.
    """
    n, h_out, w_out, offset_groups, taps, corners = per_offset_group.shape
    per_chunk = per_offset_group.unsqueeze(4).expand(-1, -1, -1, -1, chunks // offset_groups, -1, -1)
    per_chunk = per_chunk.reshape(n, h_out, w_out, groups, chunks // groups, taps, corners)
    return per_chunk.transpose(4, 5)


def deform_conv2d_reference(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    mask: Tensor | None = None,
) -> Tensor:
    """Pure-PyTorch deformable convolution v2 on any device; arguments as in :func:`deform_conv2d`.

    Without autograd it works in bands of output rows, so each band's column buffer stays small
    (cache-resident, reused by the allocator). With autograd the whole column buffer is needed for
    the weight gradient anyway, and one band keeps the input gradient to a single scatter.
    """
    geometry = check_arguments(input, offset, weight, bias, stride, padding, dilation, mask)
    n, c_in, height, width = input.shape
    taps = geometry.kernel[0] * geometry.kernel[1]
    h_out, w_out = geometry.out_size
    groups = geometry.groups
    pixels, weights = _bilinear_corners(offset, mask, geometry, height, width)  # (N, Ho, Wo, og, K, 4)
    chunks = math.lcm(geometry.offset_groups, groups)
    if chunks > 1:
        chunk_index = torch.arange(chunks, device=input.device).view(groups, 1, chunks // groups, 1)  # (G, 1, L/G, 1)
        pixels = _to_column_order(pixels, chunks, groups) * chunks + chunk_index  # (N, Ho, Wo, G, K, L/G, 4)
        weights = _to_column_order(weights, chunks, groups)
    weights = weights.to(input.dtype)
    table = input.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)  # (N, H, W, C_in)
    table = table.reshape(n * height * width * chunks, c_in // chunks)  # (N*H*W*L, C_in/L), a view
    # Within conv group g the columns run over (tap, channel); the weight is reordered to match.
    weight_1x1 = weight.permute(0, 2, 3, 1).reshape(weight.shape[0], taps * weight.shape[1], 1, 1)
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (input, offset, weight, bias, mask)
    )
    band_rows = h_out if needs_grad else max(1, _BAND_ELEMENTS // max(1, n * w_out * taps * c_in))
    bands = []
    for top in range(0, h_out, band_rows):
        rows = min(band_rows, h_out - top)
        columns = F.embedding_bag(
            pixels[:, top : top + rows].reshape(-1, 4),
            table,
            per_sample_weights=weights[:, top : top + rows].reshape(-1, 4),
            mode="sum",
        )  # (N*rows*Wo*G*K*L/G, C_in/L)
        columns = columns.view(n, rows, w_out, taps * c_in).permute(0, 3, 1, 2)  # (N, K*C_in, rows, Wo), channels-last
        bands.append(F.conv2d(columns, weight_1x1, bias, groups=groups).contiguous())  # (N, C_out, rows, Wo)
    return bands[0] if len(bands) == 1 else torch.cat(bands, dim=2)
