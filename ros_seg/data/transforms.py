"""Training augmentations on sample dicts: random scale, crop, flip and color jitter.

A sample is the dict `CityscapesDataset` yields: "image" (H, W, 3) uint8 RGB,
"semantic" (H, W) train ids, "masks" (K, H, W) bool, and per-segment arrays
("classes", "is_thing", "is_crowd", "segment_ids"), plus anything else, which
is passed through. Geometric transforms move image, semantic and masks
together; label maps and masks are resampled by nearest neighbour with the
same pixel-centre convention as the image's bilinear resize, so they stay
aligned. Segments left empty by a crop are dropped. Every function takes a
numpy Generator, so a seeded generator gives the same augmentation.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from ros_seg.models.class_metadata import IGNORE_ID

Sample = dict[str, Any]
SEGMENT_KEYS = ("masks", "classes", "is_thing", "is_crowd", "segment_ids")


def _nearest_indices(src: int, dst: int) -> np.ndarray:
    """Source index of each of `dst` output pixels, pixel centres aligned (as cv2 INTER_LINEAR)."""
    return np.minimum(((np.arange(dst) + 0.5) * src / dst).astype(np.int64), src - 1)


def resize(sample: Sample, size: tuple[int, int]) -> Sample:
    """Resize to (height, width): image bilinear, semantic and masks nearest."""
    height, width = size
    out = dict(sample)
    out["image"] = cv2.resize(sample["image"], (width, height), interpolation=cv2.INTER_LINEAR)
    rows = _nearest_indices(sample["image"].shape[0], height)
    cols = _nearest_indices(sample["image"].shape[1], width)
    if "semantic" in sample:
        out["semantic"] = sample["semantic"][rows[:, None], cols[None, :]]
    if "masks" in sample:
        out["masks"] = sample["masks"][:, rows[:, None], cols[None, :]]
    return out


def random_scale(sample: Sample, rng: np.random.Generator, scale_range: tuple[float, float] = (0.5, 2.0)) -> Sample:
    """Resize by a factor drawn uniformly from `scale_range`."""
    factor = rng.uniform(*scale_range)
    height, width = sample["image"].shape[:2]
    return resize(sample, (max(1, round(height * factor)), max(1, round(width * factor))))


def _keep_segments(sample: Sample, keep: np.ndarray) -> Sample:
    """Keep the segments where `keep` (K,) is True in every per-segment array."""
    out = dict(sample)
    for key in SEGMENT_KEYS:
        if key in sample:
            out[key] = sample[key][keep]
    return out


def pad(sample: Sample, size: tuple[int, int], ignore_id: int = IGNORE_ID) -> Sample:
    """Pad bottom/right to at least (height, width): image 0, semantic `ignore_id`, masks False."""
    height, width = sample["image"].shape[:2]
    extra_h, extra_w = max(0, size[0] - height), max(0, size[1] - width)
    if not (extra_h or extra_w):
        return sample
    out = dict(sample)
    out["image"] = np.pad(sample["image"], ((0, extra_h), (0, extra_w), (0, 0)))
    if "semantic" in sample:
        out["semantic"] = np.pad(sample["semantic"], ((0, extra_h), (0, extra_w)), constant_values=ignore_id)
    if "masks" in sample:
        out["masks"] = np.pad(sample["masks"], ((0, 0), (0, extra_h), (0, extra_w)))
    return out


def random_crop(sample: Sample, rng: np.random.Generator, size: tuple[int, int], ignore_id: int = IGNORE_ID) -> Sample:
    """Crop (height, width) at a uniformly random position, padding first if the image is smaller.

    Segments with no pixel left are dropped.
    """
    sample = pad(sample, size, ignore_id)
    height, width = sample["image"].shape[:2]
    top = int(rng.integers(0, height - size[0] + 1))
    left = int(rng.integers(0, width - size[1] + 1))
    rows, cols = slice(top, top + size[0]), slice(left, left + size[1])
    out = dict(sample)
    out["image"] = sample["image"][rows, cols]
    if "semantic" in sample:
        out["semantic"] = sample["semantic"][rows, cols]
    if "masks" not in sample:
        return out
    out["masks"] = sample["masks"][:, rows, cols]
    return _keep_segments(out, out["masks"].any(axis=(1, 2)))


def horizontal_flip(sample: Sample, rng: np.random.Generator, probability: float = 0.5) -> Sample:
    """Mirror left-right with `probability`."""
    if rng.uniform() >= probability:
        return sample
    out = dict(sample)
    out["image"] = np.ascontiguousarray(sample["image"][:, ::-1])
    if "semantic" in sample:
        out["semantic"] = np.ascontiguousarray(sample["semantic"][:, ::-1])
    if "masks" in sample:
        out["masks"] = np.ascontiguousarray(sample["masks"][:, :, ::-1])
    return out


def color_jitter(
    sample: Sample,
    rng: np.random.Generator,
    brightness: float = 0.3,
    contrast: float = 0.3,
    saturation: float = 0.3,
    hue: float = 0.03,
) -> Sample:
    """Random brightness, contrast and saturation factors in [1 - x, 1 + x] and a hue shift
    in [-hue, hue] turns of the colour wheel, applied in that order; image only.
    """
    image = sample["image"].astype(np.float32) / 255.0
    image *= rng.uniform(1 - brightness, 1 + brightness)
    gray_mean = cv2.cvtColor(np.clip(image, 0, 1), cv2.COLOR_RGB2GRAY).mean()
    image = (image - gray_mean) * rng.uniform(1 - contrast, 1 + contrast) + gray_mean
    image = np.clip(image, 0, 1)
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None]
    image = np.clip(gray + (image - gray) * rng.uniform(1 - saturation, 1 + saturation), 0, 1)
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)  # H in degrees
    hsv[..., 0] = (hsv[..., 0] + 360.0 * rng.uniform(-hue, hue)) % 360.0
    image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    out = dict(sample)
    out["image"] = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out


class TrainAugmentation:
    """Random scale -> random crop -> horizontal flip -> color jitter, for training.

    Args:
        crop_size: (height, width) of the output.
        scale_range: range of the random resize factor.
        flip_probability: chance of a left-right mirror.
        jitter: brightness, contrast, saturation, hue amounts (see `color_jitter`);
            None disables it.
        ignore_id: semantic value of padded pixels.
        seed: seed of the generator used when a call passes none. DataLoader
            workers copy it, so give each worker its own with `reseed`
            (e.g. in `worker_init_fn`).
    """

    def __init__(
        self,
        crop_size: tuple[int, int] = (512, 1024),
        scale_range: tuple[float, float] = (0.5, 2.0),
        flip_probability: float = 0.5,
        jitter: tuple[float, float, float, float] | None = (0.3, 0.3, 0.3, 0.03),
        ignore_id: int = IGNORE_ID,
        seed: int | None = None,
    ) -> None:
        self.crop_size = crop_size
        self.scale_range = scale_range
        self.flip_probability = flip_probability
        self.jitter = jitter
        self.ignore_id = ignore_id
        self.rng = np.random.default_rng(seed)

    def reseed(self, seed: int) -> None:
        """Restart the internal generator from `seed`."""
        self.rng = np.random.default_rng(seed)

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        rng = self.rng if rng is None else rng
        sample = random_scale(sample, rng, self.scale_range)
        sample = random_crop(sample, rng, self.crop_size, self.ignore_id)
        sample = horizontal_flip(sample, rng, self.flip_probability)
        if self.jitter is not None:
            sample = color_jitter(sample, rng, *self.jitter)
        return sample
