"""The panoptic ground truth of a dataset sample as one segment-id map, as metrics and bags take it."""
from __future__ import annotations

from typing import Any

import numpy as np


def ground_truth_panoptic(sample: dict[str, Any]) -> tuple[np.ndarray, dict[int, int], list[int]]:
    """(H, W) segment ids (0 = void), {segment id: train id} and crowd ids of a dataset sample."""
    masks = sample["masks"]  # (K, H, W) bool, disjoint
    ids = np.asarray(sample["segment_ids"], dtype=np.int64)
    if len(ids) == 0:
        return np.zeros(masks.shape[1:], dtype=np.int64), {}, []
    panoptic = np.where(masks.any(axis=0), ids[masks.argmax(axis=0)], 0)
    segments = {int(i): int(c) for i, c in zip(ids, sample["classes"])}
    crowd = [int(i) for i, is_crowd in zip(ids, sample["is_crowd"]) if is_crowd]
    return panoptic, segments, crowd
