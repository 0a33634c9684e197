"""Deformable convolution in ONNX graphs: the standard ``DeformConv`` operator (opset 19).

While ``torch.onnx.export`` traces a model (the TorchScript exporter,
``dynamo=False``), :func:`ros_seg.ops.deform_conv2d` routes through
:class:`DeformConv2dExport`: its forward computes the pure-PyTorch reference, so
tracing sees correct values and shapes, and its ``symbolic`` writes one
``DeformConv`` node instead of the reference's gathers. ONNX ``DeformConv``
uses the layouts of ``torchvision.ops.deform_conv2d`` (offsets (dy, dx)
interleaved per kernel tap, the mask one channel per tap), so tensors pass
through unchanged.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ros_seg.ops.deform_conv_reference import deform_conv2d_reference

OPSET = 19
"""First opset with ``DeformConv``."""


class DeformConv2dExport(torch.autograd.Function):
    """Reference deformable convolution whose ONNX form is one ``DeformConv`` node.

    Arguments are validated tensors and ``(h, w)`` pairs, with the conv and offset
    group counts already derived; used only while exporting.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        input: Tensor,
        weight: Tensor,
        offset: Tensor,
        bias: Tensor | None,
        mask: Tensor | None,
        stride: tuple[int, int],
        padding: tuple[int, int],
        dilation: tuple[int, int],
    ) -> Tensor:
        return deform_conv2d_reference(input, offset, weight, bias, stride, padding, dilation, mask)

    @staticmethod
    def symbolic(
        g: torch.Graph,
        input: torch.Value,
        weight: torch.Value,
        offset: torch.Value,
        bias: torch.Value | None,
        mask: torch.Value | None,
        stride: tuple[int, int],
        padding: tuple[int, int],
        dilation: tuple[int, int],
    ) -> torch.Value:
        """One ``DeformConv`` node; the group counts come from the traced tensor shapes."""
        channels = _static_dim(input, 1, "input channels")
        weight_shape = weight.type().sizes()
        groups = channels // weight_shape[1]
        taps = weight_shape[2] * weight_shape[3]
        offset_groups = _static_dim(offset, 1, "offset channels") // (2 * taps)
        inputs = [input, weight, offset]
        if bias is not None or mask is not None:
            inputs.append(bias if bias is not None else g.op("Constant", value_t=torch.zeros(weight_shape[0])))
        if mask is not None:
            inputs.append(mask)
        return g.op(
            "DeformConv",
            *inputs,
            dilations_i=list(dilation),
            group_i=groups,
            kernel_shape_i=list(weight_shape[2:]),
            offset_group_i=offset_groups,
            pads_i=[padding[0], padding[1], padding[0], padding[1]],
            strides_i=list(stride),
        )


def _static_dim(value: torch.Value, dim: int, what: str) -> int:
    """A dimension the exporter knows as a number (channel counts always are)."""
    sizes = value.type().varyingSizes()
    if sizes is None or sizes[dim] is None:
        raise ValueError(f"deform_conv2d export: {what} must have a static size")
    return int(sizes[dim])
