"""Accuracy of a predictor over a Cityscapes-layout split: mIoU and, for panoptic data, PQ / SQ / RQ.

One loop serves `ros-seg eval` (predictions of the Segmenter, the pipeline the
node and replay run) and training's periodic validation (the model and its
family's post-processing, without the Segmenter's image handling).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from ros_seg.data.panoptic_ground_truth import ground_truth_panoptic
from ros_seg.eval.json_safe import nan_to_none
from ros_seg.eval.panoptic_metrics import PanopticAccumulator
from ros_seg.eval.semantic_metrics import SemanticAccumulator
from ros_seg.models.class_metadata import ClassMetadata


@dataclass
class Prediction:
    """Label maps of one image at the ground truth's resolution.

    semantic: (H, W) class ids, `ignore_id` where unlabeled.
    panoptic: (H, W) segment ids, 0 = unlabeled; None when only semantic maps are scored.
    segments: segment id -> class id for every id of `panoptic` but 0.
    """

    semantic: np.ndarray
    panoptic: np.ndarray | None = None
    segments: dict[int, int] | None = None


def score_split(
    dataset: Any, metadata: ClassMetadata, predict: Callable[[np.ndarray], Prediction], progress: bool = False
) -> dict[str, Any]:
    """Score `predict` ((H, W, 3) uint8 RGB image -> Prediction) on every sample of `dataset` (a
    CityscapesDataset without transform; panoptic maps are asked for when its task is panoptic).

    Returns miou, per_class_iou {name: IoU or None}, pixel_accuracy,
    confused_with {name: [(class its pixels were most often predicted as,
    percent), ...]} and, when the dataset's task is panoptic, pq, sq, rq,
    pq_things, pq_stuff, per_class_pq {name: {pq, sq, rq, tp, fp, fn}} and
    things_by_area [{area, segments, matched, recall}] (percent; None where
    undefined), plus "images".
    """
    semantic = SemanticAccumulator(metadata)
    panoptic = PanopticAccumulator(metadata) if dataset.task == "panoptic" else None
    for index in tqdm(range(len(dataset)), desc="evaluating", disable=not progress, leave=False):
        sample = dataset[index]
        prediction = predict(sample["image"])
        semantic.update(prediction.semantic, sample["semantic"])
        if panoptic is not None:
            gt_map, gt_segments, gt_crowd = ground_truth_panoptic(sample)
            panoptic.update(prediction.panoptic, prediction.segments, gt_map, gt_segments, gt_crowd)
    summary = semantic.summary()
    report: dict[str, Any] = {
        "images": len(dataset),
        "miou": summary["miou"],
        "per_class_iou": summary["per_class_iou"],
        "pixel_accuracy": summary["pixel_accuracy"],
        "confused_with": semantic.confusions(),
    }
    pq = panoptic.summary() if panoptic is not None else {}
    for key in ("pq", "sq", "rq", "pq_things", "pq_stuff"):
        report[key] = pq.get(key, math.nan)
    if panoptic is not None:
        report["per_class_pq"] = pq["per_class"]
        report["things_by_area"] = pq["things_by_area"]
    return nan_to_none(report)
