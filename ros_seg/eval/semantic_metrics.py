"""Semantic segmentation metrics: per-class IoU, mIoU and pixel accuracy.

Follows cityscapesScripts' evalPixelLevelSemanticLabeling: pixels whose ground
truth is ignored do not count; a prediction outside the label set (e.g. 255 or
a class ignored in evaluation) is a false negative of the ground-truth class
and a false positive of none; a class's IoU is undefined when it is neither in
the ground truth nor predicted, and mIoU averages the defined ones. Values are
percentages (0-100).
"""
from __future__ import annotations

import math

import numpy as np

from ros_seg.models.class_metadata import CITYSCAPES, ClassMetadata


class SemanticAccumulator:
    """Confusion matrix over a stream of images, then IoU scores.

    Args:
        metadata: the label set; maps hold its train ids and `ignore_id`.
    """

    def __init__(self, metadata: ClassMetadata = CITYSCAPES) -> None:
        self.metadata = metadata
        n = metadata.num_classes
        # rows: ground-truth class; columns: predicted class, last = outside the label set
        self.confusion = np.zeros((n, n + 1), dtype=np.int64)

    def update(self, prediction: np.ndarray, ground_truth: np.ndarray) -> None:
        """Add one image: (H, W) predicted and ground-truth train ids."""
        if prediction.shape != ground_truth.shape:
            raise ValueError(
                f"prediction shape {prediction.shape} differs from ground truth shape {ground_truth.shape}"
            )
        n = self.metadata.num_classes
        gt = ground_truth.astype(np.int64).ravel()
        pred = prediction.astype(np.int64).ravel()
        valid = (gt >= 0) & (gt < n)
        gt, pred = gt[valid], pred[valid]
        pred = np.where((pred >= 0) & (pred < n), pred, n)
        self.confusion += np.bincount(gt * (n + 1) + pred, minlength=n * (n + 1)).reshape(n, n + 1)

    def class_iou(self) -> np.ndarray:
        """(C,) IoU in percent per class, NaN for a class absent from ground truth and prediction."""
        n = self.metadata.num_classes
        tp = np.diag(self.confusion[:, :n]).astype(np.float64)
        union = self.confusion.sum(axis=1) + self.confusion[:, :n].sum(axis=0) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, 100.0 * tp / union, np.nan)

    def confusions(self, top: int = 2) -> dict[str, list[tuple[str, float]]]:
        """Where each class's ground-truth pixels went wrong: {class: [(predicted as, percent of the
        class's pixels), ...]}, the `top` largest shares of other classes (or "outside the label set"),
        largest first, shares above 0 only; classes absent from the ground truth are left out."""
        names = [*self.metadata.names, "outside the label set"]
        result = {}
        for c, row in enumerate(self.confusion):
            total = row.sum()
            if total == 0:
                continue
            wrong = row.astype(np.float64).copy()
            wrong[c] = 0.0
            order = np.argsort(-wrong, kind="stable")[:top]
            result[names[c]] = [(names[k], float(100.0 * wrong[k] / total)) for k in order if wrong[k] > 0]
        return result

    def summary(self) -> dict:
        """{"miou", "per_class_iou" {name: value or None when undefined}, "pixel_accuracy"}.

        An aggregate with nothing to average is NaN.
        """
        iou = self.class_iou()
        defined = ~np.isnan(iou)
        total = self.confusion.sum()
        correct = np.trace(self.confusion[:, : self.metadata.num_classes])
        return {
            "miou": float(iou[defined].mean()) if defined.any() else math.nan,
            "per_class_iou": {
                name: (float(v) if not math.isnan(v) else None) for name, v in zip(self.metadata.names, iou)
            },
            "pixel_accuracy": float(100.0 * correct / total) if total else math.nan,
        }
