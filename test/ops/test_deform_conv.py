"""Tests of ros_seg.ops.deform_conv2d: a direct loop formula, gradcheck, conv equivalence, edges, dispatch."""
from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from ros_seg.bench.deform_conv_speed import bench_deform_conv2d
from ros_seg.ops import DeformConv2d, deform_conv2d, deform_conv2d_reference, register_cuda_kernel

from kernel_recording import recorded_kernel_calls

# The package exports the function under the module's own name, so fetch the module explicitly.
deform_module = importlib.import_module("ros_seg.ops.deform_conv_reference")


def _as_pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else value


def _bilinear_direct(image: list[list[float]], py: float, px: float) -> float:
    """torchvision's sampling rule, one point: zero outside (-1, H) x (-1, W), else corners inside the image."""
    height, width = len(image), len(image[0])
    if py <= -1 or py >= height or px <= -1 or px >= width:
        return 0.0
    y0, x0 = math.floor(py), math.floor(px)
    total = 0.0
    for y, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
        for x, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
            if 0 <= y < height and 0 <= x < width:
                total += wy * wx * image[y][x]
    return total


def _deform_conv2d_direct(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: int | tuple[int, int],
    padding: int | tuple[int, int],
    dilation: int | tuple[int, int],
    mask: Tensor | None,
) -> Tensor:
    """The DCNv2 sum written out with Python loops over every output element, tap and channel."""
    (sh, sw), (ph, pw), (dh, dw) = _as_pair(stride), _as_pair(padding), _as_pair(dilation)
    n_batch, c_in, height, width = input.shape
    c_out, c_per_group, kh, kw = weight.shape
    groups = c_in // c_per_group
    taps = kh * kw
    offset_groups = offset.shape[1] // (2 * taps)
    h_out = (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    w_out = (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    image, off, wt = input.double().tolist(), offset.double().tolist(), weight.double().tolist()
    mod = mask.double().tolist() if mask is not None else None
    out = torch.zeros(n_batch, c_out, h_out, w_out, dtype=torch.float64)
    for n in range(n_batch):
        for o in range(c_out):
            group = o // (c_out // groups)
            for y in range(h_out):
                for x in range(w_out):
                    acc = float(bias[o]) if bias is not None else 0.0
                    for c in range(c_per_group):
                        channel = group * c_per_group + c
                        g = channel // (c_in // offset_groups)
                        for i in range(kh):
                            for j in range(kw):
                                k = i * kw + j
                                dy = off[n][2 * (g * taps + k)][y][x]
                                dx = off[n][2 * (g * taps + k) + 1][y][x]
                                m = mod[n][g * taps + k][y][x] if mod is not None else 1.0
                                py = y * sh - ph + i * dh + dy
                                px = x * sw - pw + j * dw + dx
                                acc += wt[o][c][i][j] * m * _bilinear_direct(image[n][channel], py, px)
                    out[n, o, y, x] = acc
    return out


def _random_case(
    generator: torch.Generator,
    n: int,
    c_in: int,
    c_out: int,
    size: tuple[int, int],
    kernel: tuple[int, int],
    stride: int | tuple[int, int],
    padding: int | tuple[int, int],
    dilation: int | tuple[int, int],
    groups: int,
    offset_groups: int,
    offset_scale: float = 3.0,
    dtype: torch.dtype = torch.float32,
) -> dict[str, Tensor]:
    """Random input, weight, bias, offsets (spanning outside the image) and mask of one geometry."""
    (sh, sw), (ph, pw), (dh, dw) = _as_pair(stride), _as_pair(padding), _as_pair(dilation)
    kh, kw = kernel
    h_out = (size[0] + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    w_out = (size[1] + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    taps = kh * kw

    def rand(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=generator).to(dtype)

    return {
        "input": rand(n, c_in, *size),
        "offset": rand(n, 2 * offset_groups * taps, h_out, w_out) * offset_scale,
        "weight": rand(c_out, c_in // groups, kh, kw),
        "bias": rand(c_out),
        "mask": torch.rand(n, offset_groups * taps, h_out, w_out, generator=generator).to(dtype),
    }


GEOMETRIES = [
    # kernel, stride, padding, dilation, groups, offset_groups
    pytest.param((3, 3), 1, 1, 1, 1, 1, id="plain"),
    pytest.param((3, 3), 2, 1, 1, 2, 2, id="stride2-groups2-og2"),
    pytest.param((3, 3), 1, 2, 2, 2, 2, id="dilation2-groups2-og2"),
    pytest.param((3, 2), (2, 1), (1, 0), (1, 2), 1, 4, id="pairs-og4"),
    pytest.param((3, 3), 1, 1, 1, 4, 1, id="depthwise-og1"),
    pytest.param((2, 2), 1, 1, 1, 2, 4, id="groups2-og4"),
    pytest.param((1, 3), 2, (0, 1), 1, 1, 2, id="groups1-og2"),
]


@pytest.fixture(params=[None, 1], ids=["one-band", "row-bands"])
def band_elements(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int | None:
    """Run once with the default band size and once with one output row per band."""
    if request.param is not None:
        monkeypatch.setattr(deform_module, "_BAND_ELEMENTS", request.param)
    return request.param


@pytest.mark.parametrize("kernel, stride, padding, dilation, groups, offset_groups", GEOMETRIES)
@pytest.mark.parametrize("with_mask", [True, False], ids=["mask", "no-mask"])
def test_matches_direct_formula(
    band_elements: int | None,
    kernel: tuple[int, int],
    stride: int | tuple[int, int],
    padding: int | tuple[int, int],
    dilation: int | tuple[int, int],
    groups: int,
    offset_groups: int,
    with_mask: bool,
) -> None:
    generator = torch.Generator().manual_seed(0)
    case = _random_case(generator, 2, 4, 4, (5, 6), kernel, stride, padding, dilation, groups, offset_groups)
    mask = case["mask"] if with_mask else None
    expected = _deform_conv2d_direct(
        case["input"], case["offset"], case["weight"], case["bias"], stride, padding, dilation, mask
    )
    actual = deform_conv2d(
        case["input"], case["offset"], case["weight"], case["bias"], stride, padding, dilation, mask
    )
    assert actual.shape == expected.shape
    assert actual.is_contiguous()
    torch.testing.assert_close(actual.double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "stride, padding, dilation, groups, offset_groups",
    [pytest.param(1, 1, 1, 2, 2, id="groups2-og2"), pytest.param(2, 0, 2, 1, 1, id="stride2-dilation2")],
)
def test_gradcheck(stride: int, padding: int, dilation: int, groups: int, offset_groups: int) -> None:
    generator = torch.Generator().manual_seed(1)
    case = _random_case(
        generator, 1, 4, 2, (5, 6), (2, 3), stride, padding, dilation, groups, offset_groups, dtype=torch.float64
    )
    # Whole-pixel offsets plus a fraction in [0.1, 0.9]: no sample lies on a pixel row or column,
    # where bilinear interpolation has a kink; some fall outside the image.
    offset = case["offset"]
    offset = torch.randint(-3, 3, offset.shape, generator=generator) + 0.1 + 0.8 * torch.rand(
        offset.shape, generator=generator, dtype=torch.float64
    )
    inputs = tuple(
        t.requires_grad_() for t in (case["input"], offset, case["weight"], case["bias"], case["mask"])
    )

    def op(input: Tensor, offset: Tensor, weight: Tensor, bias: Tensor, mask: Tensor) -> Tensor:
        return deform_conv2d(input, offset, weight, bias, stride, padding, dilation, mask)

    assert torch.autograd.gradcheck(op, inputs)


@pytest.mark.parametrize(
    "kernel, stride, padding, dilation, groups",
    [
        pytest.param((3, 3), 1, 1, 1, 1, id="same"),
        pytest.param((3, 3), 2, 1, 1, 2, id="stride2-groups2"),
        pytest.param((3, 3), 1, 2, 2, 8, id="dilation2-depthwise"),
        pytest.param((2, 3), (1, 2), (0, 1), (2, 1), 2, id="pairs"),
    ],
)
@pytest.mark.parametrize("unit_mask", [True, False], ids=["ones-mask", "no-mask"])
def test_zero_offsets_equal_conv2d(
    kernel: tuple[int, int],
    stride: int | tuple[int, int],
    padding: int | tuple[int, int],
    dilation: int | tuple[int, int],
    groups: int,
    unit_mask: bool,
) -> None:
    generator = torch.Generator().manual_seed(2)
    case = _random_case(generator, 2, 8, 16, (9, 11), kernel, stride, padding, dilation, groups, 2)
    offset = torch.zeros_like(case["offset"])
    mask = torch.ones_like(case["mask"]) if unit_mask else None
    expected = F.conv2d(case["input"], case["weight"], case["bias"], stride, padding, dilation, groups)
    actual = deform_conv2d(case["input"], offset, case["weight"], case["bias"], stride, padding, dilation, mask)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_strided_and_channels_last_arguments(band_elements: int | None) -> None:
    """Offset and mask sliced from one prediction (as DCNv2 layers do) and a channels-last input."""
    generator = torch.Generator().manual_seed(8)
    case = _random_case(generator, 2, 4, 6, (5, 6), (3, 3), 1, 1, 1, 2, 2)
    prediction = torch.cat([case["offset"], case["mask"]], dim=1)  # (N, 3 * og * K, Ho, Wo)
    offset, mask = prediction[:, :36], prediction[:, 36:]
    assert not offset.is_contiguous() and not mask.is_contiguous()
    input = case["input"].contiguous(memory_format=torch.channels_last)
    expected = _deform_conv2d_direct(input, offset, case["weight"], case["bias"], 1, 1, 1, mask)
    actual = deform_conv2d(input, offset, case["weight"], case["bias"], padding=1, mask=mask)
    torch.testing.assert_close(actual.double(), expected, rtol=1e-5, atol=1e-5)


def test_empty_batch() -> None:
    case = _random_case(torch.Generator().manual_seed(9), 1, 4, 6, (5, 6), (3, 3), 1, 1, 1, 2, 2)
    output = deform_conv2d(
        case["input"][:0], case["offset"][:0], case["weight"], case["bias"], padding=1, mask=case["mask"][:0]
    )
    assert output.shape == (0, 6, 5, 6)


@pytest.mark.parametrize("shift", [1000.0, -1000.0, 6.0, -6.0])
def test_samples_outside_the_image_give_bias(shift: float) -> None:
    generator = torch.Generator().manual_seed(3)
    case = _random_case(generator, 2, 4, 3, (5, 6), (3, 3), 1, 1, 1, 1, 2)
    offset = torch.full_like(case["offset"], shift)
    actual = deform_conv2d(case["input"], offset, case["weight"], case["bias"], padding=1, mask=case["mask"])
    torch.testing.assert_close(actual, case["bias"].view(1, -1, 1, 1).expand_as(actual))


def test_sample_at_minus_one_is_zero_with_zero_gradient() -> None:
    """torchvision treats py == -1 as outside: no value, and no gradient towards the row-0 neighbour."""
    input = torch.arange(1.0, 10.0, dtype=torch.float64).view(1, 1, 3, 3)
    weight = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    offset = torch.zeros(1, 2, 3, 3, dtype=torch.float64)
    offset[0, 0] = -1 - torch.arange(3.0, dtype=torch.float64).view(3, 1)  # py = -1 for every output pixel
    offset[0, 1] = 0.25  # px inside the image
    offset.requires_grad_()
    output = deform_conv2d(input, offset, weight)
    assert torch.count_nonzero(output) == 0
    output.sum().backward()
    assert torch.count_nonzero(offset.grad) == 0


def test_integer_positions_use_forward_difference_gradient() -> None:
    """At a whole-pixel sample the offset gradient is v(y + 1) - v(y), as in torchvision."""
    input = torch.tensor([[1.0, 2.0], [5.0, 11.0]], dtype=torch.float64).view(1, 1, 2, 2)
    weight = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    offset = torch.zeros(1, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    deform_conv2d(input, offset, weight)[0, 0, 0, 0].backward()  # the sample at pixel (0, 0)
    torch.testing.assert_close(offset.grad[0, :, 0, 0], torch.tensor([5.0 - 1.0, 2.0 - 1.0], dtype=torch.float64))


@pytest.mark.parametrize("dtype, tolerance", [(torch.float16, 1e-2), (torch.bfloat16, 5e-2)])
def test_half_precision_agrees_with_float32(dtype: torch.dtype, tolerance: float) -> None:
    generator = torch.Generator().manual_seed(4)
    case = _random_case(generator, 2, 16, 8, (12, 10), (3, 3), 1, 1, 1, 2, 2)
    case["weight"] = case["weight"] / math.sqrt(8 * 9)
    low = {name: t.to(dtype) for name, t in case.items()}
    # The float32 run sees the same rounded inputs, so only the arithmetic precision differs.
    exact = {name: t.float() for name, t in low.items()}
    expected = deform_conv2d(
        exact["input"], exact["offset"], exact["weight"], exact["bias"], padding=1, mask=exact["mask"]
    )
    low["offset"].requires_grad_()
    actual = deform_conv2d(low["input"], low["offset"], low["weight"], low["bias"], padding=1, mask=low["mask"])
    assert actual.dtype == dtype
    scale = expected.abs().max()
    assert (actual.float() - expected).abs().max() <= tolerance * scale
    actual.float().sum().backward()
    assert low["offset"].grad is not None and low["offset"].grad.dtype == dtype
    assert torch.isfinite(low["offset"].grad.float()).all()


def _good_arguments() -> dict[str, Tensor]:
    return _random_case(torch.Generator().manual_seed(5), 2, 4, 6, (5, 6), (3, 3), 1, 1, 1, 2, 2)


def test_module_under_cpu_autocast_runs_in_bfloat16() -> None:
    """Autocast casts convolutions, not custom ops: the module casts for itself, as a conv would."""
    torch.manual_seed(0)
    layer = DeformConv2d(8, 6, 3, padding=1)
    x, offset = torch.randn(1, 8, 9, 11), torch.randn(1, 18, 9, 11)
    mask = torch.rand(1, 9, 9, 11)
    reference = layer(x, offset, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x.bfloat16(), offset, mask)  # mixed input dtypes, as inside an autocast model
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference, atol=0.1, rtol=0.05)
    with pytest.raises(ValueError, match="dtype"):
        layer(x.bfloat16(), offset, mask)  # outside autocast a dtype mismatch is still an error


@pytest.mark.parametrize(
    "name, change, keyword",
    [
        ("input", lambda a: a["input"][0], "input"),
        ("offset", lambda a: a["offset"][:, :-1], "offset"),
        ("offset", lambda a: a["offset"][:, :, :-1], "offset"),
        ("offset", lambda a: a["offset"][:1], "offset"),
        ("offset", lambda a: torch.cat([a["offset"], a["offset"][:, :18]], dim=1), "offset groups"),
        ("mask", lambda a: a["mask"][:, :-1], "mask"),
        ("mask", lambda a: a["mask"][..., :-1], "mask"),
        ("weight", lambda a: a["weight"][:, :, :, 0], "weight"),
        ("weight", lambda a: torch.cat([a["weight"]] * 3, dim=1)[:, :3], "weight"),
        ("weight", lambda a: a["weight"][:5], "weight"),
        ("bias", lambda a: a["bias"][:-1], "bias"),
        ("weight", lambda a: a["weight"].double(), "weight"),
        ("mask", lambda a: a["mask"].double(), "mask"),
    ],
)
def test_bad_shapes_raise_value_error_naming_the_argument(
    name: str, change: Callable[[dict[str, Tensor]], Tensor], keyword: str
) -> None:
    arguments = _good_arguments()
    arguments[name] = change(arguments)
    with pytest.raises(ValueError, match=keyword):
        deform_conv2d(
            arguments["input"], arguments["offset"], arguments["weight"], arguments["bias"], padding=1,
            mask=arguments["mask"],
        )


@pytest.mark.parametrize(
    "argument, value",
    [("stride", 0), ("padding", -1), ("dilation", (1, 0)), ("stride", (1, 2, 3))],
)
def test_bad_geometry_raises_value_error_naming_the_argument(argument: str, value: object) -> None:
    arguments = _good_arguments()
    with pytest.raises(ValueError, match=argument):
        deform_conv2d(
            arguments["input"], arguments["offset"], arguments["weight"], arguments["bias"],
            mask=arguments["mask"], **{"padding": 1, argument: value},
        )


def test_too_small_input_raises_value_error() -> None:
    input = torch.randn(1, 2, 2, 2)
    weight = torch.randn(2, 2, 3, 3)
    with pytest.raises(ValueError, match="too small"):
        deform_conv2d(input, torch.zeros(1, 18, 1, 1), weight)


@pytest.fixture
def recording_kernel() -> Iterator[list[tuple]]:
    """A registered CUDA kernel that records its arguments; the previous kernel restored afterwards."""
    with recorded_kernel_calls(register_cuda_kernel) as calls:
        yield calls


def test_cpu_tensors_never_use_the_cuda_kernel(recording_kernel: list[tuple]) -> None:
    arguments = _good_arguments()
    output = deform_conv2d(
        arguments["input"], arguments["offset"], arguments["weight"], arguments["bias"], padding=1,
        mask=arguments["mask"],
    )
    assert recording_kernel == []
    expected = deform_conv2d_reference(
        arguments["input"], arguments["offset"], arguments["weight"], arguments["bias"], padding=1,
        mask=arguments["mask"],
    )
    torch.testing.assert_close(output, expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_use_the_registered_kernel(recording_kernel: list[tuple]) -> None:
    arguments = {name: t.cuda() for name, t in _good_arguments().items()}
    output = deform_conv2d(
        arguments["input"], arguments["offset"], arguments["weight"], arguments["bias"], padding=1,
        mask=arguments["mask"],
    )
    assert output.item() == 7.0
    (call,) = recording_kernel
    assert call[4:7] == ((1, 1), (1, 1), (1, 1))
    assert call[7] is arguments["mask"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_reference_matches_cpu_reference() -> None:
    generator = torch.Generator().manual_seed(6)
    case = _random_case(generator, 2, 8, 6, (13, 17), (3, 3), 2, 1, 1, 2, 2, dtype=torch.float64)
    cpu = {name: t.requires_grad_() for name, t in case.items()}
    cuda = {name: t.detach().cuda().requires_grad_() for name, t in case.items()}
    outputs = []
    for tensors in (cpu, cuda):
        output = deform_conv2d_reference(
            tensors["input"], tensors["offset"], tensors["weight"], tensors["bias"], 2, 1, 1, tensors["mask"]
        )
        output.square().sum().backward()
        outputs.append(output)
    torch.testing.assert_close(outputs[1].cpu(), outputs[0])
    for name in case:
        torch.testing.assert_close(cuda[name].grad.cpu(), cpu[name].grad, msg=f"gradient of {name}")


def test_module_matches_conv2d_at_zero_offsets() -> None:
    torch.manual_seed(7)
    layer = DeformConv2d(8, 6, 3, stride=2, padding=1, dilation=1, groups=2)
    conv = torch.nn.Conv2d(8, 6, 3, stride=2, padding=1, groups=2)
    assert layer.weight.shape == conv.weight.shape and layer.bias is not None
    bound = 1 / math.sqrt(4 * 9)  # nn.Conv2d's kaiming-uniform bound for fan_in = 4 * 3 * 3
    assert layer.weight.abs().max() <= bound and layer.bias.abs().max() <= bound
    conv.load_state_dict(layer.state_dict())
    input = torch.randn(2, 8, 9, 10)
    offset = torch.zeros(2, 18, 5, 5)
    torch.testing.assert_close(layer(input, offset), conv(input))
    assert DeformConv2d(4, 4, (1, 3), bias=False).bias is None
    with pytest.raises(ValueError, match="groups"):
        DeformConv2d(6, 4, 3, groups=4)


def test_bench_reports_both_timings() -> None:
    report = bench_deform_conv2d(shape=(1, 4, 8, 8), kernel=3, warmup=0, repeats=2)
    assert report["op"] == "deform_conv2d" and report["shape"] == [1, 4, 8, 8] and report["device"] == "cpu"
    for key in ("deform_ms", "conv_ms"):
        assert {"p50", "p95", "mean"} <= set(report[key]) and report[key]["p50"] > 0
    assert report["ratio"] == pytest.approx(report["deform_ms"]["p50"] / report["conv_ms"]["p50"], rel=1e-2)
    assert report["machine"]["torch"]
