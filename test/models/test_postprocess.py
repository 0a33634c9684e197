"""Semantic and panoptic inference, valid-region resizing, segment statistics.

Every test runs twice: with the compiled CPU kernels (the CPU path) and with the
batched tensor operations (the path of other devices, run here on the CPU).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
import torch.nn.functional as F

from ros_seg.models.class_metadata import CITYSCAPES
from ros_seg.models.postprocess import cpu_label_kernels
from ros_seg.models.postprocess import label_maps as postprocess
from ros_seg.models.postprocess.label_maps import (
    panoptic_inference,
    resize_valid_region,
    segment_statistics,
    semantic_inference,
)

ROAD, SKY, CAR, PERSON = 0, 10, 13, 11
K = CITYSCAPES.num_classes


@pytest.fixture(autouse=True, params=["compiled", "tensor"])
def label_path(request, monkeypatch) -> str:
    """Which implementation of the label maps the test runs."""
    compiled = request.param == "compiled"
    monkeypatch.setattr(postprocess, "compiled_kernels", lambda device: compiled and device.type == "cpu")
    return request.param


def _class_logits(classes: list[int], confidence: float = 8.0) -> torch.Tensor:
    """(Q, K+1) logits putting almost all mass on each query's class (K = no object)."""
    logits = torch.zeros(len(classes), K + 1)
    for q, c in enumerate(classes):
        logits[q, c] = confidence
    return logits


def test_resize_valid_region_equals_upsample_crop_resize() -> None:
    maps = torch.randn(3, 8, 10)  # 1/4 of a 32x40 padded input
    valid, padded, out = (30, 37), (32, 40), (45, 50)
    ref = F.interpolate(maps[None], size=padded, mode="bilinear", align_corners=False)[:, :, :30, :37]
    ref = F.interpolate(ref, size=out, mode="bilinear", align_corners=False)[0]
    ours = resize_valid_region(maps, valid, padded, out)
    # One resampling instead of two: equal away from sub-pixel differences.
    assert ours.shape == (3, 45, 50)
    assert (ours - ref).abs().mean() < 0.05


def test_resize_valid_region_identity_for_integer_upsampling() -> None:
    maps = torch.randn(2, 6, 7)
    ours = resize_valid_region(maps, (24, 28), (24, 28), (24, 28))
    ref = F.interpolate(maps[None], size=(24, 28), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def _two_region_masks() -> torch.Tensor:
    """Query 0 covers the top half, query 1 the bottom-left, query 2 the bottom-right (8x8)."""
    m = torch.full((3, 8, 8), -10.0)
    m[0, :4] = 10.0
    m[1, 4:, :4] = 10.0
    m[2, 4:, 4:] = 10.0
    return m


def test_semantic_inference_assigns_regions() -> None:
    logits = _class_logits([SKY, ROAD, CAR])
    sem = semantic_inference(logits, _two_region_masks(), (8, 8), (8, 8), (8, 8))
    assert (sem[:4] == SKY).all() and (sem[4:, :4] == ROAD).all() and (sem[4:, 4:] == CAR).all()


def test_panoptic_inference_segments_and_stuff_merge() -> None:
    logits = _class_logits([ROAD, ROAD, CAR])  # two road queries merge into one stuff segment
    out = panoptic_inference(logits, _two_region_masks(), CITYSCAPES, (8, 8), (8, 8), (8, 8))
    assert out.classes.tolist() == [ROAD, CAR]
    assert out.panoptic[:4].unique().tolist() == [1]
    assert out.panoptic[4:, :4].unique().tolist() == [1]
    assert out.panoptic[4:, 4:].unique().tolist() == [2]


def test_panoptic_drops_low_scores_no_object_and_occluded() -> None:
    masks = _two_region_masks()
    logits = _class_logits([ROAD, CAR, PERSON])
    logits[1] = 0.0
    logits[1, K] = 9.0  # query 1 predicts "no object"
    logits[2, PERSON] = 1.0  # query 2 has a low score
    out = panoptic_inference(logits, masks, CITYSCAPES, (8, 8), (8, 8), (8, 8))
    assert out.classes.tolist() == [ROAD]
    assert (out.panoptic[4:] == 0).all()  # nobody claims the bottom half
    # A thing mostly covered by a more confident query is dropped (overlap < 0.8).
    masks2 = torch.full((2, 8, 8), -10.0)
    masks2[0, :, :] = 10.0
    masks2[1, :4, :] = 10.0
    logits2 = _class_logits([ROAD, CAR])
    logits2[1, CAR] = 5.0  # lower score than the road query
    out2 = panoptic_inference(logits2, masks2, CITYSCAPES, (8, 8), (8, 8), (8, 8))
    assert out2.classes.tolist() == [ROAD]


def test_panoptic_two_instances_of_a_thing_stay_apart() -> None:
    logits = _class_logits([ROAD, CAR, CAR])
    out = panoptic_inference(logits, _two_region_masks(), CITYSCAPES, (8, 8), (8, 8), (8, 8))
    assert out.classes.tolist() == [ROAD, CAR, CAR]
    assert set(out.panoptic.unique().tolist()) == {1, 2, 3}


def test_panoptic_empty_when_nothing_kept() -> None:
    logits = torch.zeros(3, K + 1)
    logits[:, K] = 9.0
    out = panoptic_inference(logits, _two_region_masks(), CITYSCAPES, (8, 8), (8, 8), (5, 6))
    assert out.panoptic.shape == (5, 6) and (out.panoptic == 0).all() and len(out.classes) == 0


def test_segment_statistics() -> None:
    pan = torch.zeros(6, 7, dtype=torch.int32)
    pan[1:3, 2:5] = 1  # 2x3 block
    pan[5, 6] = 2
    stats = segment_statistics(pan, 3)
    assert stats["area"].tolist() == [6, 1, 0]
    assert (stats["x0"][0], stats["y0"][0], stats["x1"][0], stats["y1"][0]) == (2, 1, 4, 2)
    assert abs(float(stats["cx"][0]) - 3.0) < 1e-9 and abs(float(stats["cy"][0]) - 1.5) < 1e-9
    assert (stats["x0"][2], stats["x1"][2]) == (0, 0)  # absent segment: zero box


def test_segment_statistics_equal_brute_force() -> None:
    g = torch.Generator().manual_seed(3)
    pan = torch.randint(0, 30, (37, 53), generator=g, dtype=torch.int32)
    stats = segment_statistics(pan, 34)  # ids 30..34 absent
    for k in range(1, 35):
        ys, xs = torch.nonzero(pan == k, as_tuple=True)
        if len(xs) == 0:
            assert stats["area"][k - 1] == 0 and stats["x1"][k - 1] == 0 and stats["y1"][k - 1] == 0
            continue
        box = [int(stats[key][k - 1]) for key in ("x0", "y0", "x1", "y1")]
        assert box == [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]
        assert int(stats["area"][k - 1]) == len(xs)
        assert abs(float(stats["cx"][k - 1]) - float(xs.double().mean())) < 1e-9
        assert abs(float(stats["cy"][k - 1]) - float(ys.double().mean())) < 1e-9


def _reference_semantic(class_logits, mask_logits, valid, padded, out):
    scores = torch.einsum("qk,qhw->khw", class_logits.softmax(-1)[:, :-1], mask_logits.sigmoid())
    return resize_valid_region(scores, valid, padded, out).argmax(0)


def _reference_panoptic_pixels(logits, scores, valid, padded, out):
    """Full-resolution computation: every kept mask resized, then merged."""
    probs = resize_valid_region(logits, valid, padded, out).sigmoid()
    winner = (probs * scores[:, None, None]).argmax(0)
    inside = probs.gather(0, winner[None])[0] >= 0.5
    won = torch.bincount(winner.flatten(), minlength=logits.shape[0])
    return winner, inside, (probs >= 0.5).flatten(1).sum(1), won


def _smooth_logits(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    """Blob-like mask logits, as a trained model gives (plus noise)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(n, 1, max(2, h // 4), max(2, w // 4), generator=g) * 6
    return F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[:, 0] + 0.3 * torch.randn(
        n, h, w, generator=g
    )


@pytest.mark.parametrize(
    "low, valid, padded, out",
    [
        ((16, 24), (64, 96), (64, 96), (64, 96)),  # integer 4x
        ((16, 24), (60, 90), (64, 96), (60, 90)),  # cropped padding
        ((16, 24), (60, 90), (64, 96), (133, 201)),  # resized to a larger input size
        ((16, 24), (64, 96), (64, 96), (37, 55)),  # smaller output
        ((8, 12), (32, 48), (32, 48), (128, 192)),  # 16x: network input smaller than the camera image
    ],
)
def test_cell_upsampling_equals_full_resolution(low, valid, padded, out, label_path) -> None:
    from ros_seg.models.postprocess.cell_upsampling import CellGrid
    from ros_seg.models.postprocess.label_maps import _panoptic_labels

    class_logits = torch.randn(12, K + 1) * 3
    masks = _smooth_logits(12, *low, seed=1)
    ours = semantic_inference(class_logits, masks, valid, padded, out, rule="fast")
    ref = _reference_semantic(class_logits, masks, valid, padded, out)
    assert ours.shape == out and (ours == ref).float().mean() > 0.9999
    authors = semantic_inference(class_logits, masks, valid, padded, out)
    upsampled = resize_valid_region(masks, valid, padded, out).sigmoid()
    ref_authors = torch.einsum("qk,qhw->khw", class_logits.softmax(-1)[:, :-1], upsampled).argmax(0)
    assert authors.shape == out and (authors == ref_authors).float().mean() > 0.9999

    scores = torch.rand(12) * 0.5 + 0.5
    grid = CellGrid.create(low, valid, padded, out, torch.device("cpu"))
    ref_winner, ref_inside, ref_area, ref_won = _reference_panoptic_pixels(masks, scores, valid, padded, out)
    ref_labels = torch.where(ref_inside, ref_winner + 1, 0)
    if label_path == "compiled":
        rendered, counts, area, won = cpu_label_kernels.query_label_map(masks, scores, grid)
        tensor_labels, tensor_area, tensor_won = _panoptic_labels(masks, scores, grid)
        # The two implementations agree exactly, not only up to ties.
        assert rendered.dtype == torch.uint8
        assert rendered.tolist() == tensor_labels.render(torch.int32).tolist()
        assert area.tolist() == tensor_area.tolist() and won.tolist() == tensor_won.tolist()
    else:
        labels, area, won = _panoptic_labels(masks, scores, grid)
        rendered, counts = labels.render(torch.int32), labels.counts(13)
    assert (rendered == ref_labels).float().mean() > 0.9999
    assert (area - ref_area).abs().max() <= 2
    assert (won - ref_won).abs().max() <= 2 and int(won.sum()) == out[0] * out[1]
    assert counts.tolist() == torch.bincount(rendered.flatten().long(), minlength=13).tolist()

    # Statistics after mapping queries to segments (two queries share segment 1) equal those of the
    # mapped map.
    table = torch.tensor([0, 1, 1] + list(range(2, 12)), dtype=torch.int32)
    expected = table[rendered.long()]
    ref_stats = segment_statistics(expected, 11)
    if label_path == "compiled":
        mapped, stats = cpu_label_kernels.relabel_with_statistics(rendered, table, 12)
        assert mapped.dtype == torch.int32 and mapped.tolist() == expected.tolist()
    else:
        stats = labels.map(table).statistics(12)
    for key, value in ref_stats.items():
        torch.testing.assert_close(stats[key][1:].to(value.dtype), value, msg=key)


def test_compiled_query_map_widens_past_254_queries() -> None:
    """With 255 kept queries or more, labels no longer fit in a byte: the compiled map is int32 and
    still equals the tensor path's."""
    from ros_seg.models.postprocess.cell_upsampling import CellGrid
    from ros_seg.models.postprocess.label_maps import _panoptic_labels

    masks = _smooth_logits(300, 8, 12, seed=4)
    scores = torch.rand(300) * 0.5 + 0.5
    grid = CellGrid.create((8, 12), (32, 48), (32, 48), (50, 70), torch.device("cpu"))
    rendered, counts, area, won = cpu_label_kernels.query_label_map(masks, scores, grid)
    labels, tensor_area, tensor_won = _panoptic_labels(masks, scores, grid)
    assert rendered.dtype == torch.int32 and int(rendered.max()) > 255
    assert rendered.tolist() == labels.render(torch.int32).tolist()
    assert area.tolist() == tensor_area.tolist() and won.tolist() == tensor_won.tolist()
    assert counts.tolist() == torch.bincount(rendered.flatten().long(), minlength=301).tolist()


def test_label_maps_from_concurrent_threads_equal_serial_ones() -> None:
    """Several Segmenters in one process post-process at once: results do not mix."""
    inputs = [(torch.randn(12, K + 1) * 3, _smooth_logits(12, 32, 48, seed=s)) for s in range(6)]

    def run(pair):
        class_logits, masks = pair
        sem = semantic_inference(class_logits, masks, (128, 192), (128, 192), (256, 384))
        pan = panoptic_inference(class_logits, masks, CITYSCAPES, (128, 192), (128, 192), (256, 384), 0.3, 0.5)
        return sem, pan.panoptic

    serial = [run(p) for p in inputs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(run, inputs * 2))
    for (sem, pan), (sem_c, pan_c) in zip(serial * 2, concurrent):
        assert torch.equal(sem, sem_c) and torch.equal(pan, pan_c)
