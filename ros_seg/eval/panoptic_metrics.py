"""Panoptic quality (PQ = SQ x RQ), overall, for things, for stuff and per class.

Matching and void/crowd handling follow the COCO panoptic evaluator as used
by cityscapesScripts' evalPanopticSemanticLabeling (Kirillov et al., "Panoptic
Segmentation", CVPR 2019):

- a predicted and a ground-truth segment of the same class match when their
  IoU > 0.5, where the union leaves out the predicted pixels on void ground
  truth; such matches are unique;
- crowd ground-truth segments are never matched and are not false negatives;
- an unmatched predicted segment is not a false positive when more than half
  of it lies on void or on a crowd region of its own class;
- per class: PQ = sum IoU / (TP + FP/2 + FN/2), SQ = sum IoU / TP (0 without
  TP), RQ = TP / (TP + FP/2 + FN/2); averages run over the classes with any
  TP, FP or FN.

Values are percentages (0-100). Beside PQ, the accumulator counts how many
ground-truth segments of thing classes were matched, by their area in pixels
(`things_by_area`), which shows whether missed instances are the small ones.
"""
from __future__ import annotations

import math
from collections.abc import Collection, Mapping

import numpy as np

from ros_seg.models.class_metadata import CITYSCAPES, ClassMetadata

VOID = 0
# Upper bounds (exclusive) of the area bins, in pixels, of the thing segments' recall; the last bin is open.
THING_AREA_EDGES = (64, 256, 1024, 4096)


def area_bin_labels(edges: tuple[int, ...] = THING_AREA_EDGES) -> list[str]:
    """Names of the area bins: '< 64 px', '64-255 px', ..., '>= 4096 px'."""
    labels = [f"< {edges[0]} px"]
    labels += [f"{low}-{high - 1} px" for low, high in zip(edges[:-1], edges[1:])]
    return labels + [f">= {edges[-1]} px"]


def _index_map(panoptic: np.ndarray, segments: Mapping[int, int], what: str) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ids [0, listed ids...] and each pixel's position in it; unlisted ids raise."""
    ids = np.array([VOID] + sorted(int(i) for i in segments if int(i) != VOID), dtype=np.int64)
    index = np.minimum(np.searchsorted(ids, panoptic), len(ids) - 1)  # (H, W)
    unknown = ids[index] != panoptic
    if unknown.any():
        missing = sorted(set(np.unique(panoptic[unknown]).tolist()))
        raise ValueError(f"{what} segment ids {missing[:10]} appear in the map but not in its segment list")
    return ids, index


class PanopticAccumulator:
    """Panoptic matching statistics over a stream of images, then PQ, SQ and RQ.

    Args:
        metadata: the label set; segment classes are its train ids.
    """

    def __init__(self, metadata: ClassMetadata = CITYSCAPES) -> None:
        self.metadata = metadata
        n = metadata.num_classes
        self.iou = np.zeros(n, dtype=np.float64)
        self.tp = np.zeros(n, dtype=np.int64)
        self.fp = np.zeros(n, dtype=np.int64)
        self.fn = np.zeros(n, dtype=np.int64)
        self.is_thing = np.array(metadata.is_thing, dtype=bool)  # (n,)
        self.things_total = np.zeros(len(THING_AREA_EDGES) + 1, dtype=np.int64)  # ground-truth thing segments
        self.things_matched = np.zeros(len(THING_AREA_EDGES) + 1, dtype=np.int64)  # ... of them matched

    def _classes(self, ids: np.ndarray, segments: Mapping[int, int], what: str) -> np.ndarray:
        """(N,) train id per id in `ids` (-1 for void), checked against the label set."""
        classes = np.array([-1] + [int(segments[int(i)]) for i in ids[1:]], dtype=np.int64)
        bad = classes[1:][(classes[1:] < 0) | (classes[1:] >= self.metadata.num_classes)]
        if len(bad):
            raise ValueError(
                f"{what} segments have classes {sorted(set(bad.tolist()))} outside 0..{self.metadata.num_classes - 1}"
            )
        return classes

    def update(
        self,
        pred_panoptic: np.ndarray,
        pred_segments: Mapping[int, int],
        gt_panoptic: np.ndarray,
        gt_segments: Mapping[int, int],
        gt_crowd: Collection[int] = (),
    ) -> None:
        """Add one image.

        Args:
            pred_panoptic: (H, W) predicted segment ids, 0 = void.
            pred_segments: predicted segment id -> train id; every id of the map but 0.
            gt_panoptic: (H, W) ground-truth segment ids, 0 = void.
            gt_segments: ground-truth segment id -> train id; every id of the map but 0.
            gt_crowd: ids of ground-truth crowd segments.
        """
        if pred_panoptic.shape != gt_panoptic.shape:
            raise ValueError(
                f"prediction shape {pred_panoptic.shape} differs from ground truth shape {gt_panoptic.shape}"
            )
        pred_ids, pred_index = _index_map(pred_panoptic.astype(np.int64), pred_segments, "predicted")
        gt_ids, gt_index = _index_map(gt_panoptic.astype(np.int64), gt_segments, "ground-truth")
        pred_class = self._classes(pred_ids, pred_segments, "predicted")
        gt_class = self._classes(gt_ids, gt_segments, "ground-truth")
        crowd = np.isin(gt_ids, np.array(list(gt_crowd), dtype=np.int64)) & (gt_ids != VOID)

        n_gt, n_pred = len(gt_ids), len(pred_ids)
        joint = gt_index.ravel() * n_pred + pred_index.ravel()
        inter = np.bincount(joint, minlength=n_gt * n_pred).reshape(n_gt, n_pred)  # (G, P) pixel counts
        gt_area, pred_area = inter.sum(axis=1), inter.sum(axis=0)
        on_void = inter[0]  # (P,) predicted pixels on void ground truth
        union = pred_area[None, :] + gt_area[:, None] - inter - on_void[None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
        candidate = (gt_class[:, None] == pred_class[None, :]) & ~crowd[:, None]
        candidate[0, :] = False
        candidate[:, 0] = False
        matched = candidate & (iou > 0.5)  # (G, P), at most one True per row and column
        g, p = np.nonzero(matched)
        n = self.metadata.num_classes
        self.tp += np.bincount(gt_class[g], minlength=n)
        self.iou += np.bincount(gt_class[g], weights=iou[g, p], minlength=n)

        gt_found = matched.any(axis=1)
        gt_missed = ~gt_found & ~crowd
        gt_missed[0] = False
        self.fn += np.bincount(gt_class[gt_missed], minlength=n)

        counted = (gt_class >= 0) & self.is_thing[np.maximum(gt_class, 0)] & ~crowd
        counted[0] = False
        area_bin = np.searchsorted(np.array(THING_AREA_EDGES), gt_area, side="right")
        bins = len(THING_AREA_EDGES) + 1
        self.things_total += np.bincount(area_bin[counted], minlength=bins)
        self.things_matched += np.bincount(area_bin[counted & gt_found], minlength=bins)

        same_class_crowd = crowd[:, None] & (gt_class[:, None] == pred_class[None, :])
        ignored = on_void + (inter * same_class_crowd).sum(axis=0)  # (P,)
        pred_missed = ~matched.any(axis=0) & (pred_area > 0) & (2 * ignored <= pred_area)
        pred_missed[0] = False
        self.fp += np.bincount(pred_class[pred_missed], minlength=n)

    def summary(self) -> dict:
        """PQ, SQ, RQ in percent for all classes, things and stuff, and per class.

        Keys: pq, sq, rq, n (classes averaged), pq_things, sq_things, rq_things,
        n_things, pq_stuff, sq_stuff, rq_stuff, n_stuff, and per_class
        {name: {pq, sq, rq, tp, fp, fn}} for the classes that were averaged, and
        things_by_area [{area, segments, matched, recall}] over the bins of
        THING_AREA_EDGES (non-crowd ground-truth thing segments by pixel count).
        An average over no class, and the recall of an empty bin, is NaN.
        """
        denominator = self.tp + 0.5 * self.fp + 0.5 * self.fn
        present = denominator > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            pq = np.where(present, 100.0 * self.iou / denominator, 0.0)
            sq = np.where(self.tp > 0, 100.0 * self.iou / np.maximum(self.tp, 1), 0.0)
            rq = np.where(present, 100.0 * self.tp / denominator, 0.0)
        things = self.is_thing
        result: dict = {}
        for suffix, group in (("", np.ones_like(things)), ("_things", things), ("_stuff", ~things)):
            chosen = group & present
            for key, values in (("pq", pq), ("sq", sq), ("rq", rq)):
                result[key + suffix] = float(values[chosen].mean()) if chosen.any() else math.nan
            result["n" + suffix] = int(chosen.sum())
        result["per_class"] = {
            name: {"pq": float(pq[c]), "sq": float(sq[c]), "rq": float(rq[c]),
                   "tp": int(self.tp[c]), "fp": int(self.fp[c]), "fn": int(self.fn[c])}
            for c, name in enumerate(self.metadata.names)
            if present[c]
        }
        result["things_by_area"] = [
            {"area": label, "segments": int(total), "matched": int(matched),
             "recall": 100.0 * matched / total if total else math.nan}
            for label, total, matched in zip(area_bin_labels(), self.things_total, self.things_matched)
        ]
        return result
