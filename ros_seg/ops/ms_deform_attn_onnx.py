"""Multi-scale deformable attention in ONNX graphs: TensorRT's plugin node, or standard ``GridSample`` ops.

ONNX has no deformable-attention operator, and the reference's
``embedding_bag`` has no fast ONNX form. While ``torch.onnx.export`` traces a
model, :func:`ros_seg.ops.ms_deform_attn` therefore routes through
:func:`ms_deform_attn_export`, which writes one of two forms:

- For TensorRT (inside :func:`tensorrt_plugin_export`): one node of TensorRT's
  built-in plugin ``MultiscaleDeformableAttnPlugin_TRT`` (plugin version "1",
  no plugin fields; the TensorRT ONNX parser finds it in the plugin registry by
  the node's op type). Plugin inputs: value (N, S, M, D), spatial_shapes (L, 2)
  int32, level_start_index (L,) int32, sampling_locations (N, Lq, M, L, P, 2),
  attention_weights (N, Lq, M, L, P); output (N, Lq, M, D), reshaped here to
  the operator's (N, Lq, M * D).
- Otherwise (ONNX Runtime): per level one ``GridSample`` (opset 16+; bilinear,
  zero padding, align_corners=False: the operator's sampling rule), then the
  attention-weighted sum.

The levels' shapes are read as numbers while tracing, so they are constants of
the exported graph, as they are for every fixed input size.
"""
from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor

from ros_seg.ops.ms_deform_attn_reference import ms_deform_attn_reference

PLUGIN_OP = "MultiscaleDeformableAttnPlugin_TRT"
PLUGIN_DOMAIN = "trt.plugins"
PLUGIN_VERSION = "1"

_tensorrt_export: contextvars.ContextVar[bool] = contextvars.ContextVar("ros_seg_tensorrt_export", default=False)


@contextmanager
def tensorrt_plugin_export() -> Iterator[None]:
    """Within this block, ONNX exports write deformable attention as the TensorRT plugin node."""
    token = _tensorrt_export.set(True)
    try:
        yield
    finally:
        _tensorrt_export.reset(token)


class MultiscaleDeformableAttnPlugin(torch.autograd.Function):
    """The reference operator, whose ONNX form is one TensorRT plugin node; used only while exporting."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        value: Tensor,
        spatial_shapes: Tensor,
        level_start_index: Tensor,
        sampling_locations: Tensor,
        attention_weights: Tensor,
    ) -> Tensor:
        return ms_deform_attn_reference(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)

    @staticmethod
    def symbolic(
        g: torch.Graph,
        value: torch.Value,
        spatial_shapes: torch.Value,
        level_start_index: torch.Value,
        sampling_locations: torch.Value,
        attention_weights: torch.Value,
    ) -> torch.Value:
        int32 = torch.onnx.TensorProtoDataType.INT32
        heads_out = g.op(
            f"{PLUGIN_DOMAIN}::{PLUGIN_OP}",
            value,
            g.op("Cast", spatial_shapes, to_i=int32),
            g.op("Cast", level_start_index, to_i=int32),
            sampling_locations,
            attention_weights,
            plugin_version_s=PLUGIN_VERSION,
            plugin_namespace_s="",
        )  # (N, Lq, M, D)
        merged = g.op("Constant", value_t=torch.tensor([0, 0, -1], dtype=torch.int64))
        return g.op("Reshape", heads_out, merged)  # (N, Lq, M * D); 0 keeps that dimension


def ms_deform_attn_grid_sample(
    value: Tensor, spatial_shapes: Tensor, sampling_locations: Tensor, attention_weights: Tensor
) -> Tensor:
    """The operator written with one ``F.grid_sample`` per level: arguments and result as ``ms_deform_attn``."""
    n, _, heads, channels = value.shape
    queries, levels, points = sampling_locations.shape[1], sampling_locations.shape[3], sampling_locations.shape[4]
    grids = sampling_locations * 2 - 1  # (N, Lq, M, L, P, 2) in grid_sample's [-1, 1]
    samples = []
    start = 0
    for level, (height, width) in enumerate(spatial_shapes.tolist()):
        level_value = value[:, start : start + height * width]  # (N, H*W, M, D)
        level_value = level_value.permute(0, 2, 3, 1).reshape(n * heads, channels, height, width)  # (N*M, D, H, W)
        grid = grids[:, :, :, level].transpose(1, 2).reshape(n * heads, queries, points, 2)  # (N*M, Lq, P, 2)
        samples.append(F.grid_sample(level_value, grid, mode="bilinear", padding_mode="zeros", align_corners=False))
        start += height * width
    stacked = torch.stack(samples, dim=3)  # (N*M, D, Lq, L, P)
    weights = attention_weights.transpose(1, 2).reshape(n * heads, 1, queries, levels, points)
    out = (stacked * weights).flatten(3).sum(3)  # (N*M, D, Lq)
    return out.reshape(n, heads * channels, queries).transpose(1, 2)  # (N, Lq, M*D)


def ms_deform_attn_export(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """The operator's form while an ONNX export traces it: the TensorRT plugin or the GridSample form. Locations
    and weights take the value's dtype (the graph's ops want one; float32 locations serve the GPU kernel)."""
    if sampling_locations.dtype != value.dtype:  # (a no-op .to() would still write a Cast node)
        sampling_locations = sampling_locations.to(value.dtype)
    if attention_weights.dtype != value.dtype:
        attention_weights = attention_weights.to(value.dtype)
    if _tensorrt_export.get():
        return MultiscaleDeformableAttnPlugin.apply(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights
        )
    return ms_deform_attn_grid_sample(value, spatial_shapes, sampling_locations, attention_weights)
