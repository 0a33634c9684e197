"""Our Triton kernels of deform_conv2d and ms_deform_attn against the pure-PyTorch references.

They run on a CUDA device when there is one. Without a GPU they run in Triton's
interpreter on CPU tensors (conftest.py sets ``TRITON_INTERPRET=1`` before
anything imports Triton), so CI checks the kernels' arithmetic. That compiling them
for real GPUs works is test_gpu_kernel_targets.py's job: the interpreter never
compiles.

Cases: the test geometries of test_deform_conv.py; PEM's real deform-conv
shapes (128 and 256 channels, 3x3, one offset group) and channel counts that
are no multiple of the channel block; Mask2Former's attention shapes (3 and 4
levels of odd sizes, 8 heads, 4 points, 32 channels per head) with samples on
pixel borders and outside [0, 1]; half-precision gradient values; channels-last,
permuted and sliced inputs; batches; empty tensors; every autotuner
configuration; gradients only where asked for.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterator

import pytest
import torch
from torch import Tensor

pytest.importorskip("triton", reason="Triton is not installed (requirements/core.txt pins it)")

_INTERPRETED = not torch.cuda.is_available()
assert not _INTERPRETED or os.environ.get("TRITON_INTERPRET") == "1", "conftest.py sets TRITON_INTERPRET=1"

from ros_seg.ops import (  # noqa: E402
    GPU_KERNELS,
    deform_conv2d,
    deform_conv2d_reference,
    ms_deform_attn,
    ms_deform_attn_reference,
)
from ros_seg.ops import deform_conv_triton as deform_kernels  # noqa: E402 - after the skip
from ros_seg.ops import ms_deform_attn_triton as attention_kernels  # noqa: E402
from ros_seg.ops.deform_conv_triton import deform_conv2d_triton  # noqa: E402
from ros_seg.ops.ms_deform_attn_triton import ms_deform_attn_triton  # noqa: E402

from test_deform_conv import GEOMETRIES, _as_pair  # noqa: E402
from test_deform_conv import _random_case as _deform_case  # noqa: E402
from test_ms_deform_attn import _call, _level_tensors  # noqa: E402
from test_ms_deform_attn import _random_case as _attention_case  # noqa: E402

pytestmark = pytest.mark.slow  # a check against a real reference: in CI, not in the quick loop

DEVICE = torch.device("cpu") if _INTERPRETED else torch.device("cuda")
ATTENTION_FLOATING = ("value", "sampling_locations", "attention_weights")
DEFORM_FLOATING = ("input", "offset", "weight", "bias", "mask")
M2F_LEVELS = [(9, 13), (5, 7), (3, 4)]
"""Odd level sizes, 1/32 to 1/8 of a small image, largest first as Mask2Former orders them."""


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
    return {name: case[name].grad for name in names if case[name] is not None and case[name].requires_grad}


def _assert_gradients_close(got: dict, want: dict, rtol: float, atol: float) -> None:
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=rtol, atol=atol, msg=f"gradient of {name}")


def _run_deform(case: dict[str, Tensor | None], stride=1, padding=1, dilation=1) -> Tensor:  # noqa: ANN001
    geometry = (_as_pair(stride), _as_pair(padding), _as_pair(dilation))
    return deform_conv2d_triton(case["input"], case["offset"], case["weight"], case["bias"], *geometry, case["mask"])


def _reference_deform(case: dict[str, Tensor | None], stride=1, padding=1, dilation=1) -> Tensor:  # noqa: ANN001
    return deform_conv2d_reference(case["input"], case["offset"], case["weight"], case["bias"], stride, padding,
                                   dilation, case["mask"])


def _check_deform(case: dict[str, Tensor | None], stride=1, padding=1, dilation=1, tolerance: float = 1e-4,
                  layout=None) -> None:  # noqa: ANN001
    """Kernel and reference agree in output and every gradient; ``layout`` (if given) rearranges the kernel's
    tensors in memory first, keeping their values."""
    ours, ref = _on_device(case, DEFORM_FLOATING), _on_device(case, DEFORM_FLOATING)
    leaves = ours
    if layout is not None:
        ours = {name: None if t is None else layout(name, t) for name, t in ours.items()}
    output = _run_deform(ours, stride, padding, dilation)
    expected = _reference_deform(ref, stride, padding, dilation)
    torch.testing.assert_close(output, expected, rtol=tolerance, atol=tolerance)
    _assert_gradients_close(
        _gradients(output, leaves, DEFORM_FLOATING, 2), _gradients(expected, ref, DEFORM_FLOATING, 2),
        rtol=10 * tolerance, atol=10 * tolerance,
    )


def _pem_case(seed: int, n: int, channels: int, size: tuple[int, int]) -> dict[str, Tensor]:
    """A PEM deformable conv (3x3, padding 1, one offset group, channels in and out), weights scaled so the
    output stays near unit size."""
    case = _deform_case(torch.Generator().manual_seed(seed), n, channels, channels, size, (3, 3), 1, 1, 1, 1, 1)
    case["weight"] = case["weight"] / math.sqrt(channels * 9)
    return case


@pytest.fixture
def only_config() -> Iterator:
    """A function narrowing an autotuned kernel to one of its configurations for this test."""
    saved = []

    def narrow(kernel, config) -> None:  # noqa: ANN001
        saved.append((kernel, kernel.configs))
        kernel.configs = [config]
        kernel.cache.clear()

    yield narrow
    for kernel, configs in saved:
        kernel.configs = configs
        kernel.cache.clear()


# --- deformable convolution ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel, stride, padding, dilation, groups, offset_groups", GEOMETRIES)
@pytest.mark.parametrize("with_mask", [True, False], ids=["mask", "no-mask"])
def test_deform_conv2d_kernel_equals_reference(kernel, stride, padding, dilation, groups, offset_groups,
                                               with_mask: bool) -> None:
    case = _deform_case(torch.Generator().manual_seed(1), 2, 8, 8, (9, 11), kernel, stride, padding, dilation,
                        groups, offset_groups)
    if not with_mask:
        case["mask"] = None
    _check_deform(case, stride, padding, dilation)


@pytest.mark.parametrize("channels, size, n", [(128, (6, 7), 2), (256, (5, 6), 1), (40, (7, 9), 3)],
                         ids=["pem-128", "pem-256", "40-not-a-block-multiple"])
def test_deform_conv2d_kernel_at_pem_shapes(channels: int, size: tuple[int, int], n: int) -> None:
    """Many channel blocks per offset group (the kernel's channel loop), the last one partly empty for 40."""
    _check_deform(_pem_case(5, n, channels, size), tolerance=2e-4)


@pytest.mark.parametrize("which", range(3), ids=lambda i: f"config{i}")
def test_deform_conv2d_kernel_every_block_config(which: int, only_config) -> None:  # noqa: ANN001
    """Each autotuner candidate gives the reference's results (on a GPU the fastest is used)."""
    only_config(deform_kernels._columns_kernel, deform_kernels.BLOCK_CONFIGS[which])
    only_config(deform_kernels._columns_backward_kernel, deform_kernels.BLOCK_CONFIGS[which])
    case = _pem_case(6, 1, 40, (9, 15))  # 135 output pixels: more than one block of every size tried
    _check_deform(case, tolerance=2e-4)


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


def _channels_last(name: str, tensor: Tensor) -> Tensor:
    return tensor.contiguous(memory_format=torch.channels_last) if tensor.dim() == 4 else tensor


def _strided(name: str, tensor: Tensor) -> Tensor:
    """The same values seen through a permutation and a slice of a larger buffer (neither layout the kernel
    indexes directly); 1-D tensors as they are."""
    if tensor.dim() < 2:
        return tensor
    wider = torch.cat((tensor, torch.zeros_like(tensor)), dim=-1)
    return wider.transpose(-1, -2).contiguous().transpose(-1, -2)[..., : tensor.shape[-1]]


@pytest.mark.parametrize("layout", [_channels_last, _strided], ids=["channels-last", "sliced-permuted"])
def test_deform_conv2d_kernel_reads_any_layout(layout) -> None:  # noqa: ANN001
    case = _deform_case(torch.Generator().manual_seed(9), 2, 24, 8, (7, 9), (3, 3), 1, 1, 1, 1, 2)
    _check_deform(case, layout=layout)


def test_deform_conv2d_kernel_reads_channels_last_in_place() -> None:
    """No hidden copy: the tensor handed to the kernel is the caller's channels-last tensor."""
    case = _pem_case(10, 1, 16, (5, 5))
    input = case["input"].to(DEVICE).contiguous(memory_format=torch.channels_last)
    assert deform_kernels._readable(input) is input
    assert deform_kernels._readable(input[..., ::2]) is not input


@pytest.mark.parametrize("dtype, tolerance", [(torch.float16, 1e-2), (torch.bfloat16, 4e-2)])
def test_deform_conv2d_kernel_half_precision(dtype: torch.dtype, tolerance: float) -> None:
    """Output and every gradient's values against the float32 reference on the same (rounded) inputs."""
    case = _deform_case(torch.Generator().manual_seed(4), 2, 40, 8, (7, 6), (3, 3), 1, 1, 1, 2, 2)
    case["weight"] = case["weight"] / math.sqrt(20 * 9)
    low = {name: t.to(DEVICE, dtype).requires_grad_() for name, t in case.items()}
    exact = {name: t.detach().float().requires_grad_() for name, t in low.items()}
    output = _run_deform(low)
    expected = _reference_deform(exact)
    assert output.dtype == dtype
    assert (output.float() - expected).abs().max() <= tolerance * expected.abs().max()
    got, want = _gradients(output, low, DEFORM_FLOATING, 3), _gradients(expected, exact, DEFORM_FLOATING, 3)
    for name in DEFORM_FLOATING:
        assert got[name].dtype == dtype, name
        error = (got[name].float() - want[name]).abs().max()
        assert error <= 2 * tolerance * want[name].abs().max(), f"gradient of {name}: max error {error}"


def test_deform_conv2d_kernel_computes_only_the_gradients_asked_for() -> None:
    case = _pem_case(11, 2, 20, (6, 6))
    for wanted in (("offset",), ("input",), ("weight", "mask")):
        ours = {name: t.to(DEVICE).clone() for name, t in case.items()}
        ref = {name: t.to(DEVICE).clone() for name, t in case.items()}
        for name in wanted:
            ours[name].requires_grad_()
            ref[name].requires_grad_()
        output, expected = _run_deform(ours), _reference_deform(ref)
        got, want = _gradients(output, ours, DEFORM_FLOATING, 4), _gradients(expected, ref, DEFORM_FLOATING, 4)
        assert set(got) == set(wanted)
        _assert_gradients_close(got, want, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("shape", [(0, 8, 6, 6), (2, 8, 0, 6)], ids=["no-images", "no-rows"])
def test_deform_conv2d_kernel_on_empty_tensors(shape: tuple[int, ...]) -> None:
    n, channels, height, width = shape
    input = torch.randn(shape, device=DEVICE, requires_grad=True)
    offset = torch.randn(n, 18, height, width, device=DEVICE, requires_grad=True)
    weight = torch.randn(4, channels, 3, 3, device=DEVICE, requires_grad=True)
    output = deform_conv2d_triton(input, offset, weight, None, (1, 1), (1, 1), (1, 1), None)
    assert output.shape == (n, 4, height, width)
    output.sum().backward()
    assert input.grad.shape == input.shape and offset.grad.shape == offset.shape
    assert torch.equal(weight.grad, torch.zeros_like(weight))


# --- multi-scale deformable attention ------------------------------------------------------------------------


def _check_attention(case: dict[str, Tensor], tolerance: float = 1e-4, layout=None) -> None:  # noqa: ANN001
    ours, ref = _on_device(case, ATTENTION_FLOATING), _on_device(case, ATTENTION_FLOATING)
    leaves = ours
    if layout is not None:
        ours = {name: layout(name, t) for name, t in ours.items()}
    output, expected = _call(ms_deform_attn_triton, ours), _call(ms_deform_attn_reference, ref)
    torch.testing.assert_close(output, expected, rtol=tolerance, atol=tolerance)
    _assert_gradients_close(_gradients(output, leaves, ATTENTION_FLOATING, 5),
                            _gradients(expected, ref, ATTENTION_FLOATING, 5), rtol=10 * tolerance,
                            atol=10 * tolerance)


def _m2f_case(seed: int, levels: list[tuple[int, int]], n: int = 1, queries: int = 13) -> dict[str, Tensor]:
    """Mask2Former's attention: 8 heads, 4 points, 32 channels per head; locations across and beyond [0, 1]."""
    return _attention_case(torch.Generator().manual_seed(seed), n=n, queries=queries, heads=8, channels=32,
                           points=4, shapes=levels, dtype=torch.float32)


@pytest.mark.parametrize("points, heads, channels", [(1, 1, 3), (4, 2, 5), (3, 3, 32)])
def test_ms_deform_attn_kernel_equals_reference(points: int, heads: int, channels: int) -> None:
    _check_attention(_attention_case(torch.Generator().manual_seed(3), n=2, queries=37, heads=heads,
                                     channels=channels, points=points, dtype=torch.float32))


@pytest.mark.parametrize("levels", [M2F_LEVELS, [(17, 11)] + M2F_LEVELS], ids=["3-levels", "4-levels"])
def test_ms_deform_attn_kernel_at_mask2former_shapes(levels: list[tuple[int, int]]) -> None:
    _check_attention(_m2f_case(7, levels))


def test_ms_deform_attn_kernel_on_pixel_borders() -> None:
    """Locations exactly on pixel centres (where floor jumps) and on the level's edges (0 and 1); levels of
    power-of-two sizes, so that those positions are exact in float32 for the kernel and the reference alike
    and both take the same one-sided derivative there."""
    levels = [(8, 16), (4, 8), (2, 4)]
    case = _m2f_case(8, levels, queries=12)
    widths = torch.tensor([w for _, w in levels], dtype=torch.float32).view(1, 1, 1, 3, 1)
    heights = torch.tensor([h for h, _ in levels], dtype=torch.float32).view(1, 1, 1, 3, 1)
    pixel = torch.randint(-1, 17, case["sampling_locations"].shape[:-1], generator=torch.Generator().manual_seed(2))
    x = (pixel + 0.5) / widths  # x * W - 0.5 is the integer pixel
    y = (pixel.flip(1) + 0.5) / heights
    locations = torch.stack((x, y), dim=-1)
    locations[:, :4, ..., 0] = 0.0
    locations[:, 4:8, ..., 1] = 1.0
    case["sampling_locations"] = locations
    _check_attention(case)


@pytest.mark.parametrize("which", range(3), ids=lambda i: f"config{i}")
def test_ms_deform_attn_kernel_every_block_config(which: int, only_config) -> None:  # noqa: ANN001
    config = attention_kernels.BLOCK_CONFIGS[which]
    only_config(attention_kernels._forward_kernel, config)
    only_config(attention_kernels._backward_kernel, config)
    case = _attention_case(torch.Generator().manual_seed(9), n=1, queries=70, heads=2, channels=32, points=2,
                           shapes=M2F_LEVELS, dtype=torch.float32)
    _check_attention(case)  # more than one block of queries for every size tried


@pytest.mark.parametrize("dtype, tolerance", [(torch.float16, 1e-2), (torch.bfloat16, 4e-2)])
def test_ms_deform_attn_kernel_half_precision(dtype: torch.dtype, tolerance: float) -> None:
    """Output and gradient values against the float32 reference on the same (rounded) inputs; locations
    float32 as the model passes them, weights in the value's dtype."""
    case = _m2f_case(4, M2F_LEVELS)
    low = dict(case, value=case["value"].to(dtype), attention_weights=case["attention_weights"].to(dtype))
    low = _on_device(low, ATTENTION_FLOATING)
    exact = {name: t.detach().float() if t.is_floating_point() else t for name, t in low.items()}
    exact = _on_device(exact, ATTENTION_FLOATING)
    output, expected = _call(ms_deform_attn_triton, low), _call(ms_deform_attn_reference, exact)
    assert output.dtype == dtype
    assert (output.float() - expected).abs().max() <= tolerance * expected.abs().max()
    got, want = _gradients(output, low, ATTENTION_FLOATING, 6), _gradients(expected, exact, ATTENTION_FLOATING, 6)
    assert got["sampling_locations"].dtype == torch.float32
    assert got["value"].dtype == dtype and got["attention_weights"].dtype == dtype
    for name in ATTENTION_FLOATING:
        error = (got[name].float() - want[name]).abs().max()
        assert error <= 2 * tolerance * want[name].abs().max(), f"gradient of {name}: max error {error}"


def _permuted(name: str, tensor: Tensor) -> Tensor:
    """Same values, memory in the reverse dimension order."""
    order = tuple(range(tensor.dim() - 1, -1, -1))
    return tensor.permute(order).contiguous().permute(order)


def test_ms_deform_attn_kernel_takes_permuted_inputs() -> None:
    _check_attention(_m2f_case(12, M2F_LEVELS), layout=lambda name, t: t if name.startswith("level") else _permuted(
        name, t))


def test_ms_deform_attn_kernel_computes_only_the_gradients_asked_for() -> None:
    case = _attention_case(torch.Generator().manual_seed(13), n=1, queries=9, heads=2, channels=8, points=2,
                           shapes=M2F_LEVELS, dtype=torch.float32)
    for wanted in (("value",), ("sampling_locations",), ("attention_weights",)):
        ours = {name: t.to(DEVICE).clone() for name, t in case.items()}
        ref = {name: t.to(DEVICE).clone() for name, t in case.items()}
        for name in wanted:
            ours[name].requires_grad_()
            ref[name].requires_grad_()
        output, expected = _call(ms_deform_attn_triton, ours), _call(ms_deform_attn_reference, ref)
        got, want = _gradients(output, ours, ATTENTION_FLOATING, 7), _gradients(expected, ref, ATTENTION_FLOATING, 7)
        assert set(got) == set(wanted)
        _assert_gradients_close(got, want, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("n, queries", [(0, 5), (2, 0)], ids=["no-images", "no-queries"])
def test_ms_deform_attn_kernel_on_empty_tensors(n: int, queries: int) -> None:
    spatial_shapes, level_start_index = _level_tensors(M2F_LEVELS)
    tokens = sum(h * w for h, w in M2F_LEVELS)
    value = torch.randn(n, tokens, 8, 32, device=DEVICE, requires_grad=True)
    locations = torch.rand(n, queries, 8, 3, 4, 2, device=DEVICE, requires_grad=True)
    weights = torch.rand(n, queries, 8, 3, 4, device=DEVICE, requires_grad=True)
    output = ms_deform_attn_triton(value, spatial_shapes.to(DEVICE), level_start_index.to(DEVICE), locations,
                                   weights)
    assert output.shape == (n, queries, 256)
    output.sum().backward()
    assert torch.equal(value.grad, torch.zeros_like(value))
    assert locations.grad.shape == locations.shape and weights.grad.shape == weights.shape


# --- dispatch on a real GPU ----------------------------------------------------------------------------------


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
        _run_deform(conv),
    )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("channels", [64, 256])
def test_deform_conv2d_kernel_equals_torchvision(channels: int) -> None:
    torchvision_ops = pytest.importorskip("torchvision.ops", reason="torchvision is not installed")
    case = _pem_case(8, 2, channels, (33, 47))
    cuda = {name: t.cuda() for name, t in case.items()}
    ours = _run_deform(cuda)
    theirs = torchvision_ops.deform_conv2d(cuda["input"], cuda["offset"], cuda["weight"], cuda["bias"], padding=1,
                                           mask=cuda["mask"])
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
