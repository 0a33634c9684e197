"""Color images of results: the one-pass panoptic overlay against palette lookup + blend."""
from __future__ import annotations

import numpy as np
import pytest

from ros_seg.inference.image_input import ENCODINGS
from ros_seg.inference.visualize import blend, colorize_panoptic, panoptic_overlay
from ros_seg.models.class_metadata import CITYSCAPES

SEGMENTS = {1: 0, 2: 13, 3: 13, 4: 11}  # road, two cars, a person


def _scene(channels: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (37, 53, channels), dtype=np.uint8)
    panoptic = rng.integers(0, 5, (37, 53)).astype(np.int32)
    panoptic[0, 0] = 9  # an id without a segment: black, like unlabeled
    return image, panoptic


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
def test_overlay_equals_colorize_then_blend(encoding: str, alpha: float) -> None:
    channels, order = ENCODINGS[encoding]
    image, panoptic = _scene(channels)
    rgb = np.ascontiguousarray(image[:, :, list(order)])
    expected = blend(rgb, colorize_panoptic(panoptic, SEGMENTS, CITYSCAPES), alpha)
    ours = panoptic_overlay(image, order, panoptic, SEGMENTS, CITYSCAPES, alpha)
    assert ours.shape == expected.shape and ours.dtype == np.uint8
    assert np.abs(ours.astype(int) - expected.astype(int)).max() <= 1
    if alpha == 0.0:
        assert np.array_equal(ours, rgb)
    if alpha == 1.0:
        assert np.array_equal(ours, colorize_panoptic(panoptic, SEGMENTS, CITYSCAPES))


def test_overlay_rejects_bad_alpha_and_mismatched_sizes() -> None:
    image, panoptic = _scene(3)
    with pytest.raises(ValueError, match=r"within \[0, 1\]"):
        panoptic_overlay(image, (0, 1, 2), panoptic, SEGMENTS, CITYSCAPES, 1.5)
    with pytest.raises(ValueError, match="differ in size"):
        panoptic_overlay(image[:10], (0, 1, 2), panoptic, SEGMENTS, CITYSCAPES, 0.5)
