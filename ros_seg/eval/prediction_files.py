"""Prediction files in the official Cityscapes result formats: writing and scoring.

- Semantic: one single-channel PNG of Cityscapes label ids per image, found
  anywhere under the prediction folder by its name, which starts with
  ``{city}_{seq}_{frame}`` (as evalPixelLevelSemanticLabeling looks for it).
- Panoptic: a COCO-panoptic json in the prediction folder (category_id =
  Cityscapes label id) with its PNGs in the folder named after the json's stem
  (as evalPanopticSemanticLabeling reads them).

Scoring compares them with the ground truth of a Cityscapes root (labelIds
PNGs, or the panoptic json + PNGs of createPanopticImgs) and returns the
summaries of `SemanticAccumulator` and `PanopticAccumulator`.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ros_seg.data import cityscapes_layout as layout
from ros_seg.eval.panoptic_metrics import PanopticAccumulator
from ros_seg.eval.semantic_metrics import SemanticAccumulator
from ros_seg.models.class_metadata import CITYSCAPES, ClassMetadata

_STEM = re.compile(r"^([^_]+_\d{6}_\d{6})")


def _train_ids(label_ids: np.ndarray, table: np.ndarray, ignore_id: int) -> np.ndarray:
    """Cityscapes label ids (any integer type) -> train ids; unknown ids -> `ignore_id`."""
    inside = (label_ids >= 0) & (label_ids < len(table))
    return np.where(inside, table[np.clip(label_ids, 0, len(table) - 1)], ignore_id).astype(np.uint8)


def write_semantic_prediction(
    out_dir: Path, stem: str, semantic: np.ndarray, metadata: ClassMetadata = CITYSCAPES
) -> Path:
    """Write (H, W) train ids as ``out_dir/{stem}_labelIds.png`` in label ids (unlabeled = 0)."""
    table = np.zeros(256, dtype=np.uint8)
    table[: metadata.num_classes] = metadata.label_ids
    path = Path(out_dir) / f"{stem}_labelIds.png"
    layout.write_png(path, table[semantic.astype(np.uint8)])
    return path


class PanopticPredictionWriter:
    """Collects panoptic predictions and writes ``out_dir/{name}.json`` + PNGs in ``out_dir/{name}/``.

    Args:
        out_dir: the prediction folder.
        name: stem of the json and of the PNG folder.
        metadata: the label set; classes are written as its label ids.
    """

    def __init__(
        self, out_dir: Path, name: str = "cityscapes_panoptic_val", metadata: ClassMetadata = CITYSCAPES
    ) -> None:
        self.json_path = Path(out_dir) / f"{name}.json"
        self.png_dir = Path(out_dir) / name
        self.metadata = metadata
        self.annotations: list[dict] = []

    def add(self, stem: str, panoptic: np.ndarray, segments: Mapping[int, int]) -> None:
        """Add one image: (H, W) segment ids (0 = void) and segment id -> train id of every id in the map."""
        file_name = f"{stem}_panoptic.png"
        layout.write_png(self.png_dir / file_name, layout.id_to_rgb(panoptic))
        info = [
            {"id": int(i), "category_id": int(self.metadata.label_ids[c])}
            for i, c in sorted(segments.items())
            if int(i) != 0
        ]
        self.annotations.append({"image_id": stem, "file_name": file_name, "segments_info": info})

    def close(self) -> Path:
        """Write the json; returns its path."""
        self.json_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.json_path, "w") as f:
            json.dump({"annotations": self.annotations, "categories": layout.panoptic_categories(self.metadata)}, f)
        return self.json_path


def _find_semantic_predictions(pred_dir: Path) -> dict[str, Path]:
    """PNG files under `pred_dir` (recursively) by the frame stem their names start with."""
    found: dict[str, Path] = {}
    for path in sorted(pred_dir.rglob("*.png")):
        match = _STEM.match(path.name)
        if match is None:
            continue
        stem = match.group(1)
        if stem in found:
            raise ValueError(f"found several predictions for {stem}: {found[stem]} and {path}")
        found[stem] = path
    return found


def score_semantic_predictions(gt_root: Path, pred_dir: Path, split: str = "val",
                               metadata: ClassMetadata = CITYSCAPES) -> dict:
    """Score label-id PNGs under `pred_dir` against ``gt_root/gtFine/{split}``.

    Returns the `SemanticAccumulator` summary plus "images" (the count).

    Raises:
        FileNotFoundError: no ground truth, or no prediction for a ground-truth image.
        ValueError: an unreadable or mis-sized prediction, or duplicate predictions.
    """
    gt_root, pred_dir = Path(gt_root), Path(pred_dir)
    gt_dir = gt_root / "gtFine" / split
    gt_files = sorted(gt_dir.glob(f"*/*{layout.LABEL_IDS_SUFFIX}"))
    if not gt_files:
        raise FileNotFoundError(
            f"no ground truth under {gt_dir}: expected {gt_dir}/<city>/<city>_<seq>_<frame>{layout.LABEL_IDS_SUFFIX}"
        )
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"prediction folder {pred_dir} does not exist")
    predictions = _find_semantic_predictions(pred_dir)
    table = layout.label_to_train_table(metadata)
    accumulator = SemanticAccumulator(metadata)
    for gt_file in gt_files:
        stem = layout.FrameName.parse(gt_file.name).stem
        if stem not in predictions:
            raise FileNotFoundError(
                f"no prediction for ground-truth image {stem}: expected a PNG named {stem}*.png under {pred_dir}"
            )
        gt = layout.read_png(gt_file, 1)
        pred = layout.read_png(predictions[stem], 1)
        if pred.shape != gt.shape:
            raise ValueError(
                f"prediction {predictions[stem]} is {pred.shape[1]}x{pred.shape[0]}, "
                f"ground truth {gt.shape[1]}x{gt.shape[0]}"
            )
        accumulator.update(_train_ids(pred, table, metadata.ignore_id), _train_ids(gt, table, metadata.ignore_id))
    return {**accumulator.summary(), "images": len(gt_files)}


def _prediction_json(pred: Path, split: str) -> Path:
    """The panoptic prediction json: `pred` itself, the only json in it, or ``cityscapes_panoptic_{split}.json``."""
    if pred.is_file():
        return pred
    if not pred.is_dir():
        raise FileNotFoundError(f"prediction folder {pred} does not exist")
    candidates = sorted(pred.glob("*.json"))
    if len(candidates) == 1:
        return candidates[0]
    preferred = pred / f"cityscapes_panoptic_{split}.json"
    if preferred.is_file():
        return preferred
    if not candidates:
        raise FileNotFoundError(
            f"no panoptic prediction json in {pred}: expected {preferred} with its PNGs in {preferred.with_suffix('')}/"
        )
    names = ", ".join(c.name for c in candidates)
    raise ValueError(f"several json files in {pred} ({names}): name the prediction {preferred.name}")


def _segment_classes(segments_info: list[dict], metadata: ClassMetadata, what: str) -> dict[int, int]:
    """Segment id -> train id from ``segments_info``; categories must be evaluated label ids."""
    table = layout.label_to_train_table(metadata)
    classes = {}
    for segment in segments_info:
        if not isinstance(segment, dict) or "id" not in segment or "category_id" not in segment:
            raise ValueError(f"{what}: segments_info entries need 'id' and 'category_id', got {segment!r}")
        category = int(segment["category_id"])
        train_id = int(table[category]) if 0 <= category < len(table) else metadata.ignore_id
        if train_id == metadata.ignore_id:
            raise ValueError(
                f"{what}: segment {segment['id']} has category_id {category}, not a label id of an evaluated class"
            )
        classes[int(segment["id"])] = train_id
    return classes


def score_panoptic_predictions(gt_root: Path, pred: Path, split: str = "val",
                               metadata: ClassMetadata = CITYSCAPES) -> dict:
    """Score a COCO-panoptic prediction (a folder holding the json, or the json) against
    ``gt_root/gtFine/cityscapes_panoptic_{split}.json`` and its PNGs.

    Returns the `PanopticAccumulator` summary plus "images" (the count).

    Raises:
        FileNotFoundError: missing ground truth, prediction json or PNG, or no
            prediction for a ground-truth image.
        ValueError: malformed json, unknown categories, or PNG and json disagreeing.
    """
    gt_root = Path(gt_root)
    gt_json = layout.panoptic_json_path(gt_root, split)
    gt_png_dir = layout.panoptic_png_dir(gt_root, split)
    gt_annotations = layout.load_panoptic_json(gt_json)["annotations"]
    pred_json = _prediction_json(Path(pred), split)
    pred_png_dir = pred_json.with_suffix("")
    pred_annotations = {a["image_id"]: a for a in layout.load_panoptic_json(pred_json)["annotations"]}
    accumulator = PanopticAccumulator(metadata)
    for gt_annotation in gt_annotations:
        image_id = gt_annotation["image_id"]
        if image_id not in pred_annotations:
            raise FileNotFoundError(f"no prediction for ground-truth image {image_id} in {pred_json}")
        pred_annotation = pred_annotations[image_id]
        gt_map = layout.rgb_to_id(layout.read_png(layout.annotation_png_path(gt_png_dir, gt_annotation, gt_json), 3))
        pred_map = layout.rgb_to_id(
            layout.read_png(layout.annotation_png_path(pred_png_dir, pred_annotation, pred_json), 3))
        gt_classes = _segment_classes(gt_annotation["segments_info"], metadata, f"{gt_json} image {image_id}")
        pred_classes = _segment_classes(pred_annotation["segments_info"], metadata, f"{pred_json} image {image_id}")
        present = set(np.unique(pred_map).tolist()) - {0}
        only_png, only_json = sorted(present - pred_classes.keys()), sorted(pred_classes.keys() - present)
        if only_png or only_json:
            raise ValueError(
                f"prediction for {image_id}: segment ids {only_png} are in the PNG but not in the json, "
                f"{only_json} in the json but not in the PNG"
            )
        crowd = [int(s["id"]) for s in gt_annotation["segments_info"] if s.get("iscrowd", 0)]
        accumulator.update(pred_map, pred_classes, gt_map, gt_classes, crowd)
    return {**accumulator.summary(), "images": len(gt_annotations)}
