"""Tests of ros_seg.ops.ms_deform_attn and the MSDeformAttn layer: a direct loop formula, grid_sample
agreement, gradcheck, out-of-range samples, low precision, argument checks, dispatch, meta device."""
from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from torch import Tensor

from ros_seg.models.ms_deform_attn_module import MSDeformAttn
from ros_seg.ops import ms_deform_attn, ms_deform_attn_reference, register_ms_deform_attn_kernel
from ros_seg.ops.ms_deform_attn_onnx import ms_deform_attn_grid_sample

from kernel_recording import recorded_kernel_calls

SHAPES = [(3, 4), (2, 3), (1, 2)]


def _level_tensors(shapes: list[tuple[int, int]]) -> tuple[Tensor, Tensor]:
    spatial_shapes = torch.tensor(shapes, dtype=torch.long)
    areas = spatial_shapes.prod(1)
    return spatial_shapes, torch.cat((areas.new_zeros(1), areas.cumsum(0)[:-1]))


def _random_case(
    generator: torch.Generator,
    n: int = 2,
    queries: int = 5,
    heads: int = 2,
    channels: int = 3,
    points: int = 2,
    shapes: list[tuple[int, int]] = SHAPES,
    dtype: torch.dtype = torch.float64,
) -> dict[str, Tensor]:
    """Random value, locations spanning beyond [0, 1] and softmax attention weights."""
    spatial_shapes, level_start_index = _level_tensors(shapes)
    tokens = sum(h * w for h, w in shapes)
    levels = len(shapes)
    return {
        "value": torch.randn(n, tokens, heads, channels, generator=generator, dtype=dtype),
        "spatial_shapes": spatial_shapes,
        "level_start_index": level_start_index,
        "sampling_locations": torch.rand(n, queries, heads, levels, points, 2, generator=generator, dtype=dtype)
        * 1.6
        - 0.3,
        "attention_weights": torch.rand(n, queries, heads, levels, points, generator=generator, dtype=dtype)
        .flatten(3)
        .softmax(-1)
        .view(n, queries, heads, levels, points),
    }


def _bilinear_direct(image: list[list[float]], px: float, py: float) -> float:
    """grid_sample's rule, one point in pixel coordinates: each corner inside the image counts."""
    height, width = len(image), len(image[0])
    x0, y0 = math.floor(px), math.floor(py)
    total = 0.0
    for y, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
        for x, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
            if 0 <= y < height and 0 <= x < width:
                total += wy * wx * image[y][x]
    return total


def _ms_deform_attn_direct(
    value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor, locations: Tensor, weights: Tensor
) -> Tensor:
    """The multi-scale deformable attention sum written out with Python loops."""
    n_batch, _, heads, channels = value.shape
    _, queries, _, levels, points, _ = locations.shape
    v, loc, att = value.double().tolist(), locations.double().tolist(), weights.double().tolist()
    out = torch.zeros(n_batch, queries, heads * channels, dtype=torch.float64)
    for n in range(n_batch):
        for q in range(queries):
            for m in range(heads):
                for d in range(channels):
                    acc = 0.0
                    for level in range(levels):
                        height, width = spatial_shapes[level].tolist()
                        start = int(level_start_index[level])
                        image = [[v[n][start + y * width + x][m][d] for x in range(width)] for y in range(height)]
                        for p in range(points):
                            x, y = loc[n][q][m][level][p]
                            sample = _bilinear_direct(image, x * width - 0.5, y * height - 0.5)
                            acc += att[n][q][m][level][p] * sample
                    out[n, q, m * channels + d] = acc
    return out


def _call(op, case: dict[str, Tensor]) -> Tensor:  # noqa: ANN001 - one of the two op functions
    return op(
        case["value"],
        case["spatial_shapes"],
        case["level_start_index"],
        case["sampling_locations"],
        case["attention_weights"],
    )


@pytest.mark.parametrize("points, heads", [(1, 1), (2, 2), (3, 1)])
def test_matches_direct_formula(points: int, heads: int) -> None:
    case = _random_case(torch.Generator().manual_seed(points), points=points, heads=heads)
    expected = _ms_deform_attn_direct(
        case["value"], case["spatial_shapes"], case["level_start_index"],
        case["sampling_locations"], case["attention_weights"],
    )
    torch.testing.assert_close(_call(ms_deform_attn, case), expected)


def test_agrees_with_grid_sample() -> None:
    """The embedding_bag reference against the per-level grid_sample form (the ONNX Runtime export)."""
    case = _random_case(torch.Generator().manual_seed(1), n=1, queries=40, heads=4, channels=8, points=4,
                        shapes=[(7, 9), (4, 5), (2, 3)], dtype=torch.float32)
    expected = ms_deform_attn_grid_sample(
        case["value"], case["spatial_shapes"], case["sampling_locations"], case["attention_weights"]
    )
    torch.testing.assert_close(_call(ms_deform_attn, case), expected, rtol=1e-5, atol=1e-5)


def test_gradcheck_float64() -> None:
    case = _random_case(torch.Generator().manual_seed(2), n=1, queries=3)
    inputs = (case["value"], case["sampling_locations"], case["attention_weights"])
    inputs = tuple(t.clone().requires_grad_() for t in inputs)

    def function(value: Tensor, locations: Tensor, weights: Tensor) -> Tensor:
        return ms_deform_attn(value, case["spatial_shapes"], case["level_start_index"], locations, weights)

    assert torch.autograd.gradcheck(function, inputs)


def test_out_of_range_locations_contribute_zero() -> None:
    case = _random_case(torch.Generator().manual_seed(3))
    # A pixel coordinate <= -1 or >= the size has no corner inside the level.
    far = torch.tensor([[-0.6, 0.5], [1.6, 0.5], [0.5, -0.6], [0.5, 1.6], [-2.0, 3.0]], dtype=torch.float64)
    locations = case["sampling_locations"].clone()
    locations[:, :] = far[:, None, None, None, :].expand_as(locations[0])
    case["sampling_locations"] = locations
    assert torch.equal(_call(ms_deform_attn, case), torch.zeros(2, 5, 6, dtype=torch.float64))


def test_sample_at_pixel_centre_reads_that_pixel() -> None:
    value = torch.arange(12, dtype=torch.float32).view(1, 12, 1, 1)  # one level 3x4
    spatial_shapes, level_start_index = _level_tensors([(3, 4)])
    # Pixel (x=2, y=1) has its centre at ((2 + 0.5) / 4, (1 + 0.5) / 3).
    locations = torch.tensor([2.5 / 4, 1.5 / 3]).view(1, 1, 1, 1, 1, 2)
    weights = torch.ones(1, 1, 1, 1, 1)
    output = ms_deform_attn(value, spatial_shapes, level_start_index, locations, weights)
    assert output.item() == pytest.approx(6.0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_runs_close_to_float32(dtype: torch.dtype) -> None:
    case = _random_case(torch.Generator().manual_seed(4), dtype=torch.float32)
    expected = _call(ms_deform_attn, case)
    low = {name: t.to(dtype) if t.is_floating_point() else t for name, t in case.items()}
    low = {name: t.requires_grad_() if t.is_floating_point() else t for name, t in low.items()}
    output = _call(ms_deform_attn, low)
    assert output.dtype == dtype
    torch.testing.assert_close(output.float(), expected, rtol=0.05, atol=0.05)
    output.float().sum().backward()
    assert low["value"].grad.dtype == dtype and low["sampling_locations"].grad.dtype == dtype


def test_meta_tensors_give_the_output_shape() -> None:
    case = _random_case(torch.Generator().manual_seed(5), dtype=torch.float32)
    meta = {name: t.to("meta") if t.is_floating_point() else t for name, t in case.items()}
    output = _call(ms_deform_attn, meta)
    assert output.is_meta and tuple(output.shape) == (2, 5, 6)


def _bad(argument: str, case: dict[str, Tensor]) -> dict[str, Tensor]:
    """`case` with one argument replaced by a wrong one."""
    wrong = {
        "value": case["value"][:, :-1],
        "spatial_shapes": case["spatial_shapes"].float(),
        "level_start_index": case["level_start_index"] + 1,
        "sampling_locations": case["sampling_locations"][..., :1],
        "attention_weights": case["attention_weights"][:, :, :, :, :1],
    }
    return {**case, argument: wrong[argument]}


@pytest.mark.parametrize(
    "argument", ["value", "spatial_shapes", "level_start_index", "sampling_locations", "attention_weights"]
)
def test_bad_argument_raises_value_error_naming_it(argument: str) -> None:
    case = _bad(argument, _random_case(torch.Generator().manual_seed(6)))
    with pytest.raises(ValueError, match=argument):
        _call(ms_deform_attn, case)


def test_mismatched_dtype_raises_value_error() -> None:
    case = _random_case(torch.Generator().manual_seed(7))
    case["attention_weights"] = case["attention_weights"].half()
    with pytest.raises(ValueError, match="attention_weights must be on the value's device .* the value's dtype or "
                       "float32"):
        _call(ms_deform_attn, case)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_float32_locations_with_low_precision_values(dtype: torch.dtype) -> None:
    """What the layer passes under autocast: positions in float32, values and weights in fp16/bf16; the
    location gradient stays float32."""
    case = _random_case(torch.Generator().manual_seed(14), dtype=torch.float32)
    expected = _call(ms_deform_attn, case)
    low = dict(case, value=case["value"].to(dtype), attention_weights=case["attention_weights"].to(dtype))
    low["sampling_locations"] = low["sampling_locations"].clone().requires_grad_()
    output = _call(ms_deform_attn, low)
    assert output.dtype == dtype
    torch.testing.assert_close(output.float(), expected, rtol=0.05, atol=0.05)
    output.float().sum().backward()
    assert low["sampling_locations"].grad.dtype == torch.float32


def test_reference_takes_permuted_sampling_locations() -> None:
    """A permuted (non-contiguous) locations tensor gives the same result as its contiguous copy."""
    case = _random_case(torch.Generator().manual_seed(15), n=2, queries=4, heads=3)
    locations = case["sampling_locations"]
    permuted = locations.permute(1, 0, 2, 3, 4, 5).contiguous().permute(1, 0, 2, 3, 4, 5)
    assert not permuted.is_contiguous() and torch.equal(permuted, locations)
    weights = case["attention_weights"].transpose(0, 1).contiguous().transpose(0, 1)
    torch.testing.assert_close(_call(ms_deform_attn_reference, dict(case, sampling_locations=permuted,
                                                                    attention_weights=weights)),
                               _call(ms_deform_attn_reference, case))


def test_layer_keeps_locations_float32_under_autocast(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under bf16 autocast the layer hands the op bf16 values but float32 locations (bf16 would move a
    location on a 256-pixel level by up to a pixel)."""
    import ros_seg.models.ms_deform_attn_module as module

    seen = []

    def recording(value: Tensor, *args: Tensor) -> Tensor:
        seen.append((value.dtype, args[2].dtype))
        return ms_deform_attn(value, *args)

    monkeypatch.setattr(module, "ms_deform_attn", recording)
    shapes = [(16, 256), (8, 128)]
    spatial_shapes, level_start_index = _level_tensors(shapes)
    layer = MSDeformAttn(embed_dim=16, num_levels=2, num_heads=2, num_points=2)
    tokens = torch.randn(1, sum(h * w for h, w in shapes), 16)
    query = torch.randn(1, 5, 16)
    reference_points = torch.rand(1, 5, 2, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = layer(query, reference_points, tokens, spatial_shapes, level_start_index)
    assert seen == [(torch.bfloat16, torch.float32)]
    assert output.shape == (1, 5, 16)


@pytest.fixture
def recording_kernel() -> Iterator[list[tuple]]:
    """A registered CUDA kernel that records its arguments; the previous kernel restored afterwards."""
    with recorded_kernel_calls(register_ms_deform_attn_kernel) as calls:
        yield calls


def test_cpu_tensors_never_use_the_cuda_kernel(recording_kernel: list[tuple]) -> None:
    case = _random_case(torch.Generator().manual_seed(8))
    torch.testing.assert_close(_call(ms_deform_attn, case), _call(ms_deform_attn_reference, case))
    assert recording_kernel == []


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_use_the_registered_kernel(recording_kernel: list[tuple]) -> None:
    case = _random_case(torch.Generator().manual_seed(9))
    cuda = {name: t.cuda() if t.is_floating_point() else t for name, t in case.items()}
    assert _call(ms_deform_attn, cuda).item() == 7.0
    (call,) = recording_kernel
    assert call[1].is_cuda and call[2].is_cuda


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_reference_matches_cpu_reference() -> None:
    case = _random_case(torch.Generator().manual_seed(10), queries=7, heads=2, channels=4, points=3)
    floating = ("value", "sampling_locations", "attention_weights")
    cpu = {name: t.clone().requires_grad_() if name in floating else t for name, t in case.items()}
    cuda = {name: t.cuda().requires_grad_() if name in floating else t for name, t in case.items()}
    outputs = []
    for tensors in (cpu, cuda):
        output = _call(ms_deform_attn_reference, tensors)
        output.square().sum().backward()
        outputs.append(output)
    torch.testing.assert_close(outputs[1].cpu(), outputs[0])
    for name in floating:
        torch.testing.assert_close(cuda[name].grad.cpu(), cpu[name].grad, msg=f"gradient of {name}")


def test_layer_initial_offsets_point_along_head_directions() -> None:
    layer = MSDeformAttn(embed_dim=16, num_levels=2, num_heads=4, num_points=3)
    pattern = layer.sampling_offsets.bias.view(4, 2, 3, 2)  # (M, L, P, xy)
    expected_first = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    torch.testing.assert_close(pattern[:, 0, 0], expected_first, atol=1e-6, rtol=0)
    torch.testing.assert_close(pattern[:, 1, 2], 3 * expected_first, atol=1e-6, rtol=0)
    assert not layer.attention_weights.weight.any() and not layer.attention_weights.bias.any()


def test_layer_matches_its_formula_and_ignores_padding() -> None:
    shapes = [(4, 5), (2, 3)]
    spatial_shapes, level_start_index = _level_tensors(shapes)
    layer = MSDeformAttn(embed_dim=8, num_levels=2, num_heads=2, num_points=2).double()
    torch.nn.init.normal_(layer.attention_weights.weight)
    torch.nn.init.normal_(layer.sampling_offsets.weight, std=0.3)
    tokens = sum(h * w for h, w in shapes)
    source = torch.randn(2, tokens, 8, dtype=torch.float64)
    query = torch.randn(2, 6, 8, dtype=torch.float64)
    reference = torch.rand(2, 6, 2, 2, dtype=torch.float64)
    output = layer(query, reference, source, spatial_shapes, level_start_index)
    assert output.shape == (2, 6, 8)

    value = layer.value_proj(source).view(2, tokens, 2, 4)
    offsets = layer.sampling_offsets(query).view(2, 6, 2, 2, 2, 2)
    locations = reference[:, :, None, :, None] + offsets / torch.tensor([[5.0, 4.0], [3.0, 2.0]])[:, None]
    weights = layer.attention_weights(query).view(2, 6, 2, 4).softmax(-1).view(2, 6, 2, 2, 2)
    expected = layer.output_proj(_ms_deform_attn_direct(value, spatial_shapes, level_start_index, locations, weights))
    torch.testing.assert_close(output, expected)

    padding = torch.zeros(2, tokens, dtype=torch.bool)
    padding[:, -3:] = True
    changed = source.clone()
    changed[:, -3:] += 100.0
    torch.testing.assert_close(
        layer(query, reference, source, spatial_shapes, level_start_index, padding),
        layer(query, reference, changed, spatial_shapes, level_start_index, padding),
    )


def test_layer_zero_size_boxes_sample_their_centre() -> None:
    spatial_shapes, level_start_index = _level_tensors([(4, 4)])
    layer = MSDeformAttn(embed_dim=8, num_levels=1, num_heads=2, num_points=2)
    source = torch.randn(1, 16, 8)
    query = torch.randn(1, 3, 8)
    boxes = torch.tensor([0.5, 0.5, 0.0, 0.0]).expand(1, 3, 1, 4)  # offsets scale with the box size: none
    output = layer(query, boxes, source, spatial_shapes, level_start_index)
    # The centre (0.5, 0.5) of a 4x4 level is pixel coordinate (1.5, 1.5): the mean of tokens 5, 6, 9, 10.
    centre_value = layer.value_proj(source)[:, [5, 6, 9, 10]].mean(1)  # (1, C)
    torch.testing.assert_close(output, layer.output_proj(centre_value).expand(1, 3, 8))


def test_bench_times_each_implementation_at_encoder_shapes() -> None:
    from ros_seg.bench.ms_deform_attn_speed import bench_ms_deform_attn
    from ros_seg.bench.summary import _op_lines

    report = bench_ms_deform_attn(size=(64, 128), warmup=0, repeats=1)
    assert report["tokens"] == 8 * 16 + 4 * 8 + 2 * 4 and report["implementation"] == "reference"
    for key in ("dispatch_ms", "grid_sample_ms", "dispatch_backward_ms", "grid_sample_backward_ms"):
        assert report[key]["p50"] > 0
    assert report["speedup_vs_grid_sample"] == pytest.approx(
        report["grid_sample_ms"]["p50"] / report["dispatch_ms"]["p50"], rel=1e-2
    )
    assert any("grid_sample" in line for line in _op_lines(report))
