"""Repeat-factor sampling: show images of rare classes more often.

The rule of LVIS (Gupta et al., 2019), also used by detectron2's
RepeatFactorTrainingSampler: a class c found in a fraction f(c) of the training
images gets the repeat factor r(c) = max(1, sqrt(t / f(c))) for a threshold t,
and an image gets the largest factor of the classes it shows (1 when it shows
none). Classes in at least a fraction t of the images are not boosted; a class
in a fraction t / 4 of them is shown about twice as often.

Here the factors become sampling weights of a fixed-length epoch (see
`ShardedBatchSampler`): an epoch still has one draw per image of the split, so
iteration counts, schedules and resume positions mean what they meant without
it, and an image is expected r(I) / mean(r) times per epoch.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def class_image_fractions(classes_per_image: Sequence[np.ndarray], num_classes: int) -> np.ndarray:
    """(num_classes,) fraction of the images in which each class is present."""
    if not classes_per_image:
        raise ValueError("no images to count classes in")
    counts = np.zeros(num_classes, dtype=np.int64)
    for present in classes_per_image:
        counts[np.unique(np.asarray(present, dtype=np.int64))] += 1
    return counts / len(classes_per_image)


def image_repeat_factors(
    classes_per_image: Sequence[np.ndarray], num_classes: int, threshold: float
) -> np.ndarray:
    """(N,) float64 repeat factor r(I) >= 1 of each image, by the rule above.

    Args:
        classes_per_image: train ids present in each image (ids >= num_classes are an error).
        num_classes: number of classes.
        threshold: t in (0, 1]; classes in fewer than this fraction of the images are boosted.
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"repeat-factor threshold must be in (0, 1], got {threshold}")
    for i, present in enumerate(classes_per_image):
        present = np.asarray(present, dtype=np.int64)
        if present.size and (present.min() < 0 or present.max() >= num_classes):
            raise ValueError(f"image {i} lists class ids {present.tolist()} outside 0..{num_classes - 1}")
    fractions = class_image_fractions(classes_per_image, num_classes)
    with np.errstate(divide="ignore"):
        class_factors = np.maximum(1.0, np.sqrt(threshold / fractions))  # inf only for absent classes, never used
    return np.array(
        [class_factors[np.asarray(p, dtype=np.int64)].max() if len(p) else 1.0 for p in classes_per_image],
        dtype=np.float64,
    )


def describe_repeat_factors(factors: np.ndarray) -> str:
    """One line for the training log: how many images are boosted and by how much."""
    boosted = factors > 1
    return (
        f"{int(boosted.sum())} of {len(factors)} images boosted; repeat factor min {factors.min():.2f}, "
        f"mean {factors.mean():.2f}, max {factors.max():.2f}"
    )
