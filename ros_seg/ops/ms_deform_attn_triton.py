"""Multi-scale deformable attention as Triton kernels, forward and backward (the GPU path).

Same layouts and sampling rule as :mod:`ros_seg.ops.ms_deform_attn` (read its
docstring): location ``x`` is pixel ``x * W_l - 0.5``; each of the four
bilinear corners counts when it lies inside the level. One program handles a
block of queries of one (image, head) and all ``D`` channels; levels and points
are loops. All arithmetic is float32 whatever the value's dtype (fp16/bf16
values are read and converted); the output takes the value's dtype.

Backward, per sample: the value gradient is scattered with relaxed atomic adds
into a float32 buffer (several queries may read one pixel; only the sum
matters, so no ordering is needed); the attention-weight
gradient is ``<grad_out, sample>``; the location gradient is the attention
weight times ``<grad_out, d sample / d pixel>`` times the level's size. On a
pixel boundary the derivative is the one-sided one of ``floor``, as in the
reference. Gradients nobody asked for (``ctx.needs_input_grad``) are not
computed. Sampling locations may be float32 with fp16/bf16 values (the model
keeps them float32 under autocast: bf16 would quantize a location to half a
pixel or more on large levels).

The block of queries per program is autotuned per shape
(:mod:`ros_seg.ops.triton_tuning`). Needs Triton (it comes with CUDA builds of PyTorch). With ``TRITON_INTERPRET=1``
set before this module is imported, the same kernels run on CPU tensors in
Triton's interpreter: how they are checked where there is no GPU.
"""
from __future__ import annotations

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU machines: the pure-PyTorch reference serves
    triton = None

def available() -> bool:
    """Whether Triton imports (the kernels can then run on CUDA tensors, or anywhere when interpreted)."""
    return triton is not None


if triton is not None:
    from ros_seg.ops.triton_sampling import floor_split
    from ros_seg.ops.triton_tuning import autotuned

    BLOCK_CONFIGS = [
        triton.Config({"BLOCK_Q": 16}, num_warps=4),
        triton.Config({"BLOCK_Q": 32}, num_warps=4),
        triton.Config({"BLOCK_Q": 64}, num_warps=8),
    ]
    """Queries per program: the autotuner's candidates for both kernels."""
    TUNING_KEY = ["queries", "tokens", "levels", "points", "channels"]

    @triton.jit
    def _corner(value, n, m, tokens, heads: tl.constexpr, channels, start, height, width, yi, xi, live, d, d_live):
        """(BLOCK_Q, BLOCK_D) float32 values of the pixels (yi, xi) of one level (zeros outside), their
        flat offsets and the mask of those read."""
        inside = live & (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
        token = start + yi * width + xi
        row = ((n * tokens + token.to(tl.int64)) * heads + m) * channels
        offset = row[:, None] + d[None, :]
        mask = inside[:, None] & d_live[None, :]
        return tl.load(value + offset, mask=mask, other=0.0).to(tl.float32), offset, mask

    @triton.jit
    def _corner_value(value, n, m, tokens, heads: tl.constexpr, channels, start, height, width, yi, xi, live, d,
                      d_live):
        """Only the values of :func:`_corner`."""
        sample, _offset, _mask = _corner(value, n, m, tokens, heads, channels, start, height, width, yi, xi, live, d,
                                         d_live)
        return sample

    @triton.jit
    def _level(shapes, starts, level):
        """Height, width and first token of a level."""
        height = tl.load(shapes + 2 * level).to(tl.int32)
        width = tl.load(shapes + 2 * level + 1).to(tl.int32)
        return height, width, tl.load(starts + level).to(tl.int32)

    @triton.jit
    def _point(locations, weights, sample, live, height, width):
        """Top-left neighbour (y0, x0), fractions (fy, fx) and attention weight of each query's sample."""
        px = tl.load(locations + 2 * sample, mask=live, other=0.0).to(tl.float32) * width - 0.5
        py = tl.load(locations + 2 * sample + 1, mask=live, other=0.0).to(tl.float32) * height - 0.5
        y0, fy = floor_split(py)
        x0, fx = floor_split(px)
        return y0, x0, fy, fx, tl.load(weights + sample, mask=live, other=0.0).to(tl.float32)

    @triton.jit
    def _program_block(queries, channels, heads: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr):
        """This program's queries (and which are real), image n, head m, and channels (and which are real)."""
        q = tl.program_id(0) * BLOCK_Q + tl.arange(0, BLOCK_Q)
        d = tl.arange(0, BLOCK_D)
        return q, q < queries, (tl.program_id(1) // heads).to(tl.int64), tl.program_id(1) % heads, d, d < channels

    @autotuned(BLOCK_CONFIGS, TUNING_KEY)
    @triton.jit
    def _forward_kernel(value, shapes, starts, locations, weights, out, queries, tokens, levels, points, channels,
                        heads: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr):
        q, live, n, m, d, d_live = _program_block(queries, channels, heads, BLOCK_Q, BLOCK_D)
        acc = tl.zeros((BLOCK_Q, BLOCK_D), dtype=tl.float32)
        sample_base = ((n * queries + q) * heads + m) * levels * points  # (BLOCK_Q,) first sample index
        for level in range(levels):
            height, width, start = _level(shapes, starts, level)
            for p in range(points):
                sample = sample_base + level * points + p
                y0, x0, fy, fx, a = _point(locations, weights, sample, live, height, width)
                v00 = _corner_value(value, n, m, tokens, heads, channels, start, height, width, y0, x0, live, d,
                                    d_live)
                v01 = _corner_value(value, n, m, tokens, heads, channels, start, height, width, y0, x0 + 1, live, d,
                                    d_live)
                v10 = _corner_value(value, n, m, tokens, heads, channels, start, height, width, y0 + 1, x0, live, d,
                                    d_live)
                v11 = _corner_value(value, n, m, tokens, heads, channels, start, height, width, y0 + 1, x0 + 1, live,
                                    d, d_live)
                w00 = (1.0 - fy) * (1.0 - fx) * a
                w01 = (1.0 - fy) * fx * a
                w10 = fy * (1.0 - fx) * a
                w11 = fy * fx * a
                acc += w00[:, None] * v00 + w01[:, None] * v01 + w10[:, None] * v10 + w11[:, None] * v11
        out_offset = (((n * queries + q) * heads + m) * channels)[:, None] + d[None, :]
        tl.store(out + out_offset, acc.to(out.dtype.element_ty), mask=live[:, None] & d_live[None, :])

    @autotuned(BLOCK_CONFIGS, TUNING_KEY, reset_to_zero=["grad_value"])
    @triton.jit
    def _backward_kernel(value, shapes, starts, locations, weights, grad_out, grad_value, grad_locations,
                         grad_weights, queries, tokens, levels, points, channels, heads: tl.constexpr,
                         VALUE_GRAD: tl.constexpr, SAMPLING_GRAD: tl.constexpr, BLOCK_Q: tl.constexpr,
                         BLOCK_D: tl.constexpr):
        """Value gradient (atomic adds) when VALUE_GRAD; location and attention-weight gradients when
        SAMPLING_GRAD."""
        q, live, n, m, d, d_live = _program_block(queries, channels, heads, BLOCK_Q, BLOCK_D)
        out_offset = (((n * queries + q) * heads + m) * channels)[:, None] + d[None, :]
        g = tl.load(grad_out + out_offset, mask=live[:, None] & d_live[None, :], other=0.0).to(tl.float32)
        sample_base = ((n * queries + q) * heads + m) * levels * points
        for level in range(levels):
            height, width, start = _level(shapes, starts, level)
            for p in range(points):
                sample = sample_base + level * points + p
                y0, x0, fy, fx, a = _point(locations, weights, sample, live, height, width)
                v00, o00, k00 = _corner(value, n, m, tokens, heads, channels, start, height, width, y0, x0, live, d,
                                        d_live)
                v01, o01, k01 = _corner(value, n, m, tokens, heads, channels, start, height, width, y0, x0 + 1, live,
                                        d, d_live)
                v10, o10, k10 = _corner(value, n, m, tokens, heads, channels, start, height, width, y0 + 1, x0, live,
                                        d, d_live)
                v11, o11, k11 = _corner(value, n, m, tokens, heads, channels, start, height, width, y0 + 1, x0 + 1,
                                        live, d, d_live)
                if VALUE_GRAD:
                    # Each corner receives its weight times the output gradient.
                    tl.atomic_add(grad_value + o00, ((1.0 - fy) * (1.0 - fx) * a)[:, None] * g, mask=k00,
                                  sem="relaxed")
                    tl.atomic_add(grad_value + o01, ((1.0 - fy) * fx * a)[:, None] * g, mask=k01, sem="relaxed")
                    tl.atomic_add(grad_value + o10, (fy * (1.0 - fx) * a)[:, None] * g, mask=k10, sem="relaxed")
                    tl.atomic_add(grad_value + o11, (fy * fx * a)[:, None] * g, mask=k11, sem="relaxed")
                if SAMPLING_GRAD:
                    # The bilinear sample and its derivatives along the pixel axes, against the output gradient.
                    sample_value = ((1.0 - fy)[:, None] * ((1.0 - fx)[:, None] * v00 + fx[:, None] * v01)
                                    + fy[:, None] * ((1.0 - fx)[:, None] * v10 + fx[:, None] * v11))
                    d_px = (1.0 - fy)[:, None] * (v01 - v00) + fy[:, None] * (v11 - v10)
                    d_py = (1.0 - fx)[:, None] * (v10 - v00) + fx[:, None] * (v11 - v01)
                    tl.store(grad_weights + sample, tl.sum(g * sample_value, axis=1), mask=live)
                    tl.store(grad_locations + 2 * sample, a * width * tl.sum(g * d_px, axis=1), mask=live)
                    tl.store(grad_locations + 2 * sample + 1, a * height * tl.sum(g * d_py, axis=1), mask=live)


def _grid(value: Tensor, sampling_locations: Tensor) -> tuple:
    """Launch grid (query blocks, images x heads) and the channel block (channels rounded up to a power of 2)."""
    n, _, heads, channels = value.shape
    queries = sampling_locations.shape[1]
    return (lambda meta: (triton.cdiv(queries, meta["BLOCK_Q"]), n * heads)), triton.next_power_of_2(channels)


def ms_deform_attn_forward(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                           sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
    """Forward kernel on contiguous tensors (validated by the dispatcher): -> (N, Lq, M * D) in value's dtype."""
    n, tokens, heads, channels = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    out = torch.empty(n, queries, heads * channels, dtype=value.dtype, device=value.device)
    if out.numel() == 0:
        return out
    grid, block_d = _grid(value, sampling_locations)
    _forward_kernel[grid](value, spatial_shapes, level_start_index, sampling_locations, attention_weights, out,
                          queries, tokens, levels, points, channels, heads=heads, BLOCK_D=block_d)
    return out


def ms_deform_attn_backward(grad_out: Tensor, value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                            sampling_locations: Tensor, attention_weights: Tensor, value_grad: bool = True,
                            sampling_grad: bool = True) -> tuple:
    """Gradients of value, sampling_locations and attention_weights (each in its own dtype); the value's only
    when ``value_grad``, the other two only when ``sampling_grad`` (None otherwise)."""
    n, tokens, heads, channels = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    device = value.device
    grad_value = torch.zeros(value.shape, dtype=torch.float32, device=device) if value_grad else None
    grad_locations = grad_weights = None
    if sampling_grad:
        grad_locations = torch.zeros(sampling_locations.shape, dtype=torch.float32, device=device)
        grad_weights = torch.zeros(attention_weights.shape, dtype=torch.float32, device=device)
    if grad_out.numel() > 0 and (value_grad or sampling_grad):
        spare = torch.empty(1, dtype=torch.float32, device=device)  # for buffers a variant never touches
        grid, block_d = _grid(value, sampling_locations)
        _backward_kernel[grid](value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                               grad_out.contiguous(), spare if grad_value is None else grad_value,
                               spare if grad_locations is None else grad_locations,
                               spare if grad_weights is None else grad_weights, queries, tokens, levels, points,
                               channels, heads=heads, VALUE_GRAD=value_grad, SAMPLING_GRAD=sampling_grad,
                               BLOCK_D=block_d)
    return (
        None if grad_value is None else grad_value.to(value.dtype),
        None if grad_locations is None else grad_locations.to(sampling_locations.dtype),
        None if grad_weights is None else grad_weights.to(attention_weights.dtype),
    )


class _MSDeformAttnFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, value, spatial_shapes, level_start_index, sampling_locations, attention_weights):  # noqa: ANN001
        ctx.save_for_backward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
        return ms_deform_attn_forward(value, spatial_shapes, level_start_index, sampling_locations,
                                      attention_weights)

    @staticmethod
    def backward(ctx, grad_out):  # noqa: ANN001
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights = ctx.saved_tensors
        needs_value, _, _, needs_locations, needs_weights = ctx.needs_input_grad
        grad_value, grad_locations, grad_weights = ms_deform_attn_backward(
            grad_out, value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
            value_grad=needs_value, sampling_grad=needs_locations or needs_weights,
        )
        return (grad_value, None, None, grad_locations if needs_locations else None,
                grad_weights if needs_weights else None)


def ms_deform_attn_triton(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                          sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
    """The kernel for :func:`ros_seg.ops.register_ms_deform_attn_kernel`: differentiable in value,
    sampling_locations and attention_weights (``.contiguous()`` copies only tensors that are not)."""
    return _MSDeformAttnFunction.apply(
        value.contiguous(), spatial_shapes.contiguous(), level_start_index.contiguous(),
        sampling_locations.contiguous(), attention_weights.contiguous(),
    )
