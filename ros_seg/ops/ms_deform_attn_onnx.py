"""Multi-scale deformable attention in ONNX graphs for TensorRT: the ``MultiscaleDeformableAttnPlugin_TRT`` node.

ONNX has no deformable-attention operator. For ONNX Runtime the pure-PyTorch
reference (``grid_sample`` based) is traced into standard ops and nothing here
is involved. For TensorRT, whose ``GridSample`` path is slow and memory hungry,
the whole operator becomes one node of TensorRT's built-in plugin
``MultiscaleDeformableAttnPlugin_TRT`` (plugin version "1", no plugin fields),
which the TensorRT ONNX parser resolves through the plugin registry by the
node's op type. Plugin inputs: value (N, S, M, D), spatial_shapes (L, 2) int32,
level_start_index (L,) int32, sampling_locations (N, Lq, M, L, P, 2),
attention_weights (N, Lq, M, L, P); output (N, Lq, M, D), reshaped here to the
operator's (N, Lq, M * D).

The operator's entry point hands its result to :func:`as_tensorrt_plugin`,
which returns it unchanged except while a TensorRT-flavoured export
(:func:`tensorrt_plugin_export`) traces the model.
"""
from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

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


class MultiscaleDeformableAttnExport(torch.autograd.Function):
    """Passes the reference result through; its ONNX form is the plugin node computed from the operator's inputs.

    The reference nodes that produced ``output`` are left without a user in the
    exported graph, and the exporter drops them.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        value: Tensor,
        spatial_shapes: Tensor,
        level_start_index: Tensor,
        sampling_locations: Tensor,
        attention_weights: Tensor,
        output: Tensor,
    ) -> Tensor:
        return output.clone()

    @staticmethod
    def symbolic(
        g: torch.Graph,
        value: torch.Value,
        spatial_shapes: torch.Value,
        level_start_index: torch.Value,
        sampling_locations: torch.Value,
        attention_weights: torch.Value,
        output: torch.Value,
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


def as_tensorrt_plugin(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    output: Tensor,
) -> Tensor:
    """`output` (N, Lq, M * D) of deformable attention on these inputs, exported as the plugin when asked.

    Outside a TensorRT-flavoured ONNX export this returns `output` itself.
    """
    if not (_tensorrt_export.get() and torch.onnx.is_in_onnx_export()):
        return output
    return MultiscaleDeformableAttnExport.apply(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights, output
    )
