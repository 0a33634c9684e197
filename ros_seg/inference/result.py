"""What the Segmenter returns for one image: label maps, segments and timings."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Segment:
    """One segment of the panoptic map.

    Args:
        id: value of this segment's pixels in `SegmentationResult.panoptic` (>= 1).
        class_id: train id of the class (index into ClassMetadata.names).
        class_name: name of the class.
        is_thing: True for countable objects, False for stuff.
        score: confidence; in [0, 1] for the MaskFormer family, Panoptic SegFormer's merge score
            (class score x mean mask value squared, its masks unbounded) can exceed 1.
        area: number of pixels in the panoptic map.
        bbox: (x, y, width, height) in pixels of the panoptic map.
        centroid: (x, y) centre of mass in pixels.
    """

    id: int
    class_id: int
    class_name: str
    is_thing: bool
    score: float
    area: int
    bbox: tuple[int, int, int, int]
    centroid: tuple[float, float]


@dataclass
class SegmentationResult:
    """Semantic and panoptic segmentation of one image.

    Args:
        semantic: (H, W) class ids, `ignore_id` (255) where unlabeled; uint8, or
            uint16 for label sets of more than 255 classes.
        panoptic: (H, W) int32 segment ids, 0 where unlabeled; every other id is
            the `id` of one entry of `segments`.
        segments: the segments of `panoptic`, in id order.
        timings: milliseconds per stage: `preprocess`, `infer`, `postprocess`.
    """

    semantic: np.ndarray
    panoptic: np.ndarray
    segments: list[Segment]
    timings: dict[str, float] = field(default_factory=dict)
