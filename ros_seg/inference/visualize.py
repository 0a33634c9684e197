"""Color images of segmentation results: semantic palette, panoptic instances, overlay blend."""
from __future__ import annotations

import cv2
import numba
import numpy as np

from ros_seg.models.class_metadata import ClassMetadata
from ros_seg.models.postprocess.row_bands import run_in_bands


def palette(metadata: ClassMetadata) -> np.ndarray:
    """(256, 3) uint8 lookup table: class colors, black for unlabeled and unused ids."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: metadata.num_classes] = np.asarray(metadata.colors, dtype=np.uint8)
    return lut


def colorize_semantic(semantic: np.ndarray, metadata: ClassMetadata) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) uint8 RGB."""
    return np.take(palette(metadata), np.clip(semantic, 0, 255).astype(np.uint8), axis=0)


def panoptic_palette(max_id: int, segment_classes: dict[int, int], metadata: ClassMetadata) -> np.ndarray:
    """(max_id + 1, 3) uint8 colors of segment ids: stuff in its class color, each thing instance in
    a shade of its class color, unlabeled (and unknown ids) black. `segment_classes` maps id -> class id."""
    lut = np.zeros((max_id + 1, 3), dtype=np.uint8)
    rng = np.random.default_rng(0)
    for seg_id, cls in segment_classes.items():
        if seg_id > max_id:
            continue
        color = np.asarray(metadata.colors[cls], dtype=np.int16)
        if metadata.is_thing[cls]:
            color = np.clip(color + rng.integers(-60, 61, size=3), 0, 255)
        lut[seg_id] = color
    return lut


def colorize_panoptic(panoptic: np.ndarray, segment_classes: dict[int, int], metadata: ClassMetadata) -> np.ndarray:
    """(H, W) segment ids -> (H, W, 3) RGB in the colors of `panoptic_palette`."""
    lut = panoptic_palette(int(panoptic.max(initial=0)), segment_classes, metadata)
    return np.take(lut, panoptic, axis=0)  # several times faster than lut[panoptic] at 2048x1024


@numba.njit(cache=True, nogil=True)
def _overlay_rows(image, order, labels, weighted_lut, keep, out, first, end):
    """out = (weighted_lut[label] + keep * pixel + 128) >> 8 per channel: an 8-bit fixed-point blend."""
    r, g, b = order[0], order[1], order[2]
    for y in range(first, end):
        for x in range(labels.shape[1]):
            color = weighted_lut[labels[y, x]]
            out[y, x, 0] = (color[0] + keep * np.int32(image[y, x, r]) + 128) >> 8
            out[y, x, 1] = (color[1] + keep * np.int32(image[y, x, g]) + 128) >> 8
            out[y, x, 2] = (color[2] + keep * np.int32(image[y, x, b]) + 128) >> 8


def panoptic_overlay(image: np.ndarray, order: tuple[int, int, int], panoptic: np.ndarray,
                     segment_classes: dict[int, int], metadata: ClassMetadata, alpha: float) -> np.ndarray:
    """alpha * panoptic colors + (1 - alpha) * image as (H, W, 3) RGB in one pass, in 8-bit fixed point
    (alpha rounded to a multiple of 1/256): what `blend(image_rgb, colorize_panoptic(...), alpha)` gives,
    to within one grey level.

    image: (H, W, C) uint8 whose channels `order` are red, green and blue; panoptic: (H, W) ids.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"overlay alpha must be within [0, 1], got {alpha}")
    if image.shape[:2] != panoptic.shape:
        raise ValueError(f"image {image.shape[:2]} and panoptic map {panoptic.shape} differ in size")
    weight = int(round(alpha * 256))  # colors weigh weight/256, the image (256 - weight)/256
    lut = panoptic_palette(int(panoptic.max(initial=0)), segment_classes, metadata).astype(np.int32) * weight
    out = np.empty((*panoptic.shape, 3), dtype=np.uint8)
    labels = np.ascontiguousarray(panoptic)
    channels = np.asarray(order, dtype=np.int64)
    run_in_bands(lambda a, b: _overlay_rows(image, channels, labels, lut, np.int32(256 - weight), out, a, b),
                 labels.shape[0])
    return out


def blend(image_rgb: np.ndarray, colors: np.ndarray, alpha: float) -> np.ndarray:
    """alpha * colors + (1 - alpha) * image, both (H, W, 3) uint8."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"overlay alpha must be within [0, 1], got {alpha}")
    return cv2.addWeighted(colors, alpha, image_rgb, 1.0 - alpha, 0.0)


def prepare_overlay(metadata: ClassMetadata) -> None:
    """Compile (or load from Numba's cache) the overlay kernel now rather than on the first overlay."""
    panoptic_overlay(np.zeros((2, 2, 3), np.uint8), (0, 1, 2), np.zeros((2, 2), np.int32), {}, metadata, 0.5)
