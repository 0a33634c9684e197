"""Our Triton kernels of deform_conv2d and ms_deform_attn against the pure-PyTorch references.

They run on a CUDA device when there is one. Without a GPU, Triton's
interpreter runs the same kernels on CPU tensors when the environment has
Triton and ``TRITON_INTERPRET=1`` is set before the test session starts:

    TRITON_INTERPRET=1 python -m pytest test/test_gpu_kernels.py

Elsewhere (CPU machines, where PyTorch comes without Triton) the tests skip.
"""
from __future__ import annotations

import math
import os

import pytest
import torch
from torch import Tensor

pytest.importorskip("triton", reason="Triton is not installed (it comes with CUDA builds of PyTorch)")

from test_deform_conv import GEOMETRIES, _as_pair  # noqa: E402
from test_deform_conv import _random_case as _deform_case  # noqa: E402
from test_ms_deform_attn import _call  # noqa: E402
from test_ms_deform_attn import _random_case as _attention_case  # noqa: E402

from ros_seg.ops import (  # noqa: E402 - after the skip
    GPU_KERNELS,
    deform_conv2d,
    deform_conv2d_reference,
    ms_deform_attn,
    ms_deform_attn_reference,
)
from ros_seg.ops.deform_conv_triton import deform_conv2d_triton  # noqa: E402
from ros_seg.ops.ms_deform_attn_triton import ms_deform_attn_triton  # noqa: E402

if torch.cuda.is_available():
    DEVICE = torch.device("cuda")
elif os.environ.get("TRITON_INTERPRET") == "1":
    DEVICE = torch.device("cpu")
else:
    pytest.skip("no CUDA device (set TRITON_INTERPRET=1 to run the kernels in Triton's interpreter)",
                allow_module_level=True)

ATTENTION_FLOATING = ("value", "sampling_locations", "attention_weights")


def _on_device(case: dict[str, Tensor | None], floating: tuple[str, ...]) -> dict[str, Tensor | None]:
    """The case on DEVICE, its floating-point tensors requiring gradients."""
    out = {}
    for name, tensor in case.items():
        if tensor is not None:
            tensor = tensor.to(DEVICE)
            if name in floating:
                tensor = tensor.clone().requires_grad_()
        out[name] = tensor
    return out


def _gradients(output: Tensor, case: dict[str, Tensor | None], names: tuple[str, ...], seed: int) -> dict:
    grad = torch.randn(output.shape, generator=torch.Generator().manual_seed(seed)).to(output)
    output.backward(grad)
    return {name: case[name].grad for name in names if case[name] is not None}


@pytest.mark.parametrize("kernel, stride, padding, dilation, groups, offset_groups", GEOMETRIES)
@pytest.mark.parametrize("with_mask", [True, False], ids=["mask", "no-mask"])
def test_deform_conv2d_kernel_equals_reference(kernel, stride, padding, dilation, groups, offset_groups,
                                               with_mask: bool) -> None:
    case = _deform_case(torch.Generator().manual_seed(1), 2, 8, 8, (9, 11), kernel, stride, padding, dilation,
                        groups, offset_groups)
    if not with_mask:
        case["mask"] = None
    names = ("input", "offset", "weight", "bias", "mask")
    ours, ref = _on_device(case, names), _on_device(case, names)
    geometry = (_as_pair(stride), _as_pair(padding), _as_pair(dilation))
    output = deform_conv2d_triton(ours["input"], ours["offset"], ours["weight"], ours["bias"], *geometry,
                                  ours["mask"])
    expected = deform_conv2d_reference(ref["input"], ref["offset"], ref["weight"], ref["bias"], stride, padding,
                                       dilation, ref["mask"])
    torch.testing.assert_close(output, expected, rtol=1e-4, atol=1e-4)
    got, want = _gradients(output, ours, names, 2), _gradients(expected, ref, names, 2)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-3, atol=1e-3, msg=f"gradient of {name}")


def test_deform_conv2d_kernel_at_the_image_border() -> None:
    """Samples at and beyond -1 and at H, W: zero with zero gradient, as torchvision."""
    input = torch.arange(1.0, 17.0).view(1, 1, 4, 4).to(DEVICE)
    weight = torch.ones(1, 1, 1, 1, device=DEVICE)
    shifts = torch.tensor([-1.0, -1.5, 3.0, 4.0, -0.5, 2.5])
    offset = torch.zeros(1, 2, 4, 4)
    offset[0, 0, 0, : len(shifts) - 2] = shifts[:4]  # dy of the first row's pixels
    offset[0, 1, 1, :2] = shifts[4:]  # dx of two second-row pixels
    ours, ref = offset.to(DEVICE).requires_grad_(), offset.to(DEVICE).requires_grad_()
    output = deform_conv2d_triton(input, ours, weight, None, (1, 1), (0, 0), (1, 1), None)
    expected = deform_conv2d_reference(input, ref, weight)
    torch.testing.assert_close(output, expected)
    output.sum().backward()
    expected.sum().backward()
    torch.testing.assert_close(ours.grad, ref.grad)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float16, 1e-2), (torch.bfloat16, 5e-2)])
def test_deform_conv2d_kernel_half_precision(dtype: torch.dtype, tolerance: float) -> None:
    case = _deform_case(torch.Generator().manual_seed(4), 2, 16, 8, (12, 10), (3, 3), 1, 1, 1, 2, 2)
    case["weight"] = case["weight"] / math.sqrt(8 * 9)
    low = {name: t.to(DEVICE, dtype) for name, t in case.items()}
    exact = {name: t.float() for name, t in low.items()}
    expected = deform_conv2d_reference(exact["input"], exact["offset"], exact["weight"], exact["bias"], padding=1,
                                       mask=exact["mask"])
    low["offset"].requires_grad_()
    output = deform_conv2d_triton(low["input"], low["offset"], low["weight"], low["bias"], (1, 1), (1, 1), (1, 1),
                                  low["mask"])
    assert output.dtype == dtype
    assert (output.float() - expected).abs().max() <= tolerance * expected.abs().max()
    output.float().sum().backward()
    assert low["offset"].grad.dtype == dtype and torch.isfinite(low["offset"].grad.float()).all()


@pytest.mark.parametrize("points, heads, channels", [(1, 1, 3), (4, 2, 5), (3, 3, 32)])
def test_ms_deform_attn_kernel_equals_reference(points: int, heads: int, channels: int) -> None:
    case = _attention_case(torch.Generator().manual_seed(3), n=2, queries=37, heads=heads, channels=channels,
                           points=points, dtype=torch.float32)
    ours, ref = _on_device(case, ATTENTION_FLOATING), _on_device(case, ATTENTION_FLOATING)
    output, expected = _call(ms_deform_attn_triton, ours), _call(ms_deform_attn_reference, ref)
    torch.testing.assert_close(output, expected, rtol=1e-4, atol=1e-4)
    got, want = _gradients(output, ours, ATTENTION_FLOATING, 5), _gradients(expected, ref, ATTENTION_FLOATING, 5)
    for name in ATTENTION_FLOATING:
        torch.testing.assert_close(got[name], want[name], rtol=1e-3, atol=1e-3, msg=f"gradient of {name}")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_ms_deform_attn_kernel_half_precision(dtype: torch.dtype) -> None:
    case = _attention_case(torch.Generator().manual_seed(4), dtype=torch.float32)
    expected = _call(ms_deform_attn_reference, case)
    low = {name: t.to(DEVICE, dtype) if t.is_floating_point() else t.to(DEVICE) for name, t in case.items()}
    low = {name: t.requires_grad_() if t.is_floating_point() else t for name, t in low.items()}
    output = _call(ms_deform_attn_triton, low)
    assert output.dtype == dtype
    torch.testing.assert_close(output.float().cpu(), expected, rtol=0.05, atol=0.05)
    output.float().sum().backward()
    assert low["value"].grad.dtype == dtype and low["sampling_locations"].grad.dtype == dtype


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_dispatchers_serve_cuda_tensors_with_the_kernels() -> None:
    assert GPU_KERNELS == ["deform_conv2d", "ms_deform_attn"]
    case = _attention_case(torch.Generator().manual_seed(6), dtype=torch.float32)
    cuda = {name: t.cuda() for name, t in case.items()}
    torch.testing.assert_close(_call(ms_deform_attn, cuda), _call(ms_deform_attn_triton, cuda))
    conv = _deform_case(torch.Generator().manual_seed(7), 1, 4, 4, (6, 6), (3, 3), 1, 1, 1, 1, 1)
    conv = {name: t.cuda() for name, t in conv.items()}
    torch.testing.assert_close(
        deform_conv2d(conv["input"], conv["offset"], conv["weight"], conv["bias"], padding=1, mask=conv["mask"]),
        deform_conv2d_triton(conv["input"], conv["offset"], conv["weight"], conv["bias"], (1, 1), (1, 1), (1, 1),
                             conv["mask"]),
    )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_deform_conv2d_kernel_equals_torchvision() -> None:
    torchvision_ops = pytest.importorskip("torchvision.ops", reason="torchvision is not installed")
    case = _deform_case(torch.Generator().manual_seed(8), 2, 8, 8, (9, 11), (3, 3), 2, 1, 1, 2, 2)
    cuda = {name: t.cuda() for name, t in case.items()}
    ours = deform_conv2d_triton(cuda["input"], cuda["offset"], cuda["weight"], cuda["bias"], (2, 2), (1, 1),
                                (1, 1), cuda["mask"])
    theirs = torchvision_ops.deform_conv2d(cuda["input"], cuda["offset"], cuda["weight"], cuda["bias"], stride=2,
                                           padding=1, mask=cuda["mask"])
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
