"""Training augmentations: determinism, and image / semantic / masks staying aligned."""
from __future__ import annotations

import numpy as np
import pytest

from ros_seg.data.transforms import (
    TrainAugmentation,
    color_jitter,
    horizontal_flip,
    random_crop,
    random_scale,
    resize,
)

PALETTE = np.random.default_rng(0).integers(0, 256, (256, 3)).astype(np.uint8)


def _sample(height: int = 60, width: int = 90, seed: int = 0) -> dict:
    """Blocky label map; the image paints each class in its palette colour."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 6, (height // 10, width // 10))
    semantic = np.kron(blocks, np.ones((10, 10), dtype=np.int64)).astype(np.uint8)
    semantic[:10, :10] = 255
    classes = np.unique(semantic[semantic != 255]).astype(np.int64)
    return {
        "image": PALETTE[semantic],
        "semantic": semantic,
        "masks": semantic[None] == classes[:, None, None],
        "classes": classes,
        "is_thing": classes % 2 == 1,
        "is_crowd": np.zeros(len(classes), dtype=bool),
        "segment_ids": classes.astype(np.int32) + 100,
        "name": "x_000000_000000",
    }


def _assert_consistent(sample: dict) -> None:
    """Masks equal their class in the semantic map, per-segment arrays agree, no empty mask."""
    k = len(sample["classes"])
    assert sample["masks"].shape == (k, *sample["semantic"].shape)
    for key in ("is_thing", "is_crowd", "segment_ids"):
        assert len(sample[key]) == k
    assert sample["masks"].any(axis=(1, 2)).all()
    for mask, cls, segment_id in zip(sample["masks"], sample["classes"], sample["segment_ids"]):
        assert np.array_equal(mask, sample["semantic"] == cls) and segment_id == cls + 100


def _interior_matches(sample: dict) -> float:
    """Share of pixels away from label edges whose image colour is their class colour."""
    semantic = sample["semantic"].astype(np.int64)
    padded = np.pad(semantic, 1, mode="edge")
    flat = np.ones_like(semantic, dtype=bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            flat &= padded[dy:dy + semantic.shape[0], dx:dx + semantic.shape[1]] == semantic
    flat[[0, -1], :] = flat[:, [0, -1]] = False  # a crop border hides the neighbours outside it
    labeled = flat & (semantic != 255)
    expected = PALETTE[semantic[labeled]].astype(np.int64)
    return float((np.abs(sample["image"][labeled].astype(np.int64) - expected).max(axis=1) <= 2).mean())


def test_same_seed_same_result_and_passthrough() -> None:
    a = TrainAugmentation((48, 64), seed=5)(_sample())
    b = TrainAugmentation((48, 64), seed=5)(_sample())
    c = TrainAugmentation((48, 64), seed=6)(_sample())
    for key in ("image", "semantic", "masks", "classes"):
        assert np.array_equal(a[key], b[key])
    assert not np.array_equal(a["image"], c["image"])
    assert a["name"] == "x_000000_000000"
    explicit = TrainAugmentation((48, 64))(_sample(), rng=np.random.default_rng(5))
    assert np.array_equal(explicit["image"], a["image"])


@pytest.mark.parametrize("seed", range(6))
def test_geometric_transforms_keep_alignment(seed: int) -> None:
    rng = np.random.default_rng(seed)
    sample = _sample(seed=seed)
    sample = random_scale(sample, rng, (0.5, 2.0))
    _assert_consistent(sample)
    assert _interior_matches(sample) == 1.0
    sample = random_crop(sample, rng, (40, 70))
    sample = horizontal_flip(sample, rng, 1.0)
    assert sample["image"].shape == (40, 70, 3) and sample["semantic"].shape == (40, 70)
    _assert_consistent(sample)
    assert _interior_matches(sample) == 1.0


def test_resize_nearest_matches_bilinear_grid() -> None:
    sample = resize(_sample(), (120, 45))
    _assert_consistent(sample)
    assert _interior_matches(sample) == 1.0


def test_flip_mirrors_every_layer() -> None:
    sample = _sample()
    flipped = horizontal_flip(sample, np.random.default_rng(0), 1.0)
    assert np.array_equal(flipped["image"], sample["image"][:, ::-1])
    assert np.array_equal(flipped["semantic"], sample["semantic"][:, ::-1])
    assert np.array_equal(flipped["masks"], sample["masks"][:, :, ::-1])
    assert horizontal_flip(sample, np.random.default_rng(0), 0.0) is sample
    assert np.array_equal(horizontal_flip(flipped, np.random.default_rng(0), 1.0)["image"], sample["image"])


def test_crop_pads_with_ignore_and_drops_empty_segments() -> None:
    sample = _sample(20, 30)
    out = random_crop(sample, np.random.default_rng(0), (50, 40))
    assert out["image"].shape == (50, 40, 3)
    assert (out["semantic"][20:] == 255).all() and (out["semantic"][:, 30:] == 255).all()
    assert (out["image"][20:] == 0).all() and not out["masks"][:, 20:].any()
    _assert_consistent(out)
    small = random_crop(_sample(), np.random.default_rng(1), (5, 5))
    _assert_consistent(small)
    assert len(small["classes"]) <= 2


def test_color_jitter_changes_only_the_image() -> None:
    sample = _sample()
    out = color_jitter(sample, np.random.default_rng(0), 0.4, 0.4, 0.4, 0.1)
    assert out["image"].dtype == np.uint8 and out["image"].shape == sample["image"].shape
    assert not np.array_equal(out["image"], sample["image"])
    assert out["semantic"] is sample["semantic"] and out["masks"] is sample["masks"]
    same = color_jitter(sample, np.random.default_rng(0), 0.0, 0.0, 0.0, 0.0)
    assert np.abs(same["image"].astype(int) - sample["image"].astype(int)).max() <= 1
