"""Cityscapes reader for semantic and panoptic training and evaluation.

Reads the official layout (``leftImg8bit/`` + ``gtFine/``; the panoptic ground
truth is the COCO-panoptic json + PNGs that cityscapesScripts'
createPanopticImgs writes, with label ids as category ids). `ros-seg synth`
writes the same layout, so both load identically.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ros_seg.data import cityscapes_layout as layout
from ros_seg.data.transforms import Sample
from ros_seg.models.class_metadata import CITYSCAPES, ClassMetadata

TASKS = ("panoptic", "semantic")


class CityscapesDataset:
    """Images of one Cityscapes split with their segments.

    Each sample is a dict:
        "image": (H, W, 3) uint8 RGB numpy array.
        "semantic": (H, W) uint8 train ids, `metadata.ignore_id` (255) where unlabeled.
        "masks": (K, H, W) bool, one per segment, disjoint.
        "classes": (K,) int64 train id per segment.
        "is_thing": (K,) bool.
        "is_crowd": (K,) bool, True for a crowd region of a thing class (no
            single instance; evaluation ignores predictions on it, training
            targets usually leave it out).
        "segment_ids": (K,) int32 Cityscapes segment ids (label_id * 1000 +
            instance for objects, label id for stuff and crowds).
        "name": "{city}_{seq}_{frame}".
    Panoptic task: one segment per entry of the panoptic json; semantic comes
    from the same PNG. Semantic task: from ``*_gtFine_labelIds.png``, one
    segment per class present (segment id = its label id).

    Args:
        root: the Cityscapes root (holding ``leftImg8bit/`` and ``gtFine/``).
        split: "train", "val", "test" or any folder under ``leftImg8bit/``.
        task: "panoptic" or "semantic".
        transform: applied to each sample dict (see `ros_seg.data.transforms`).
        metadata: the label set; category ids in files are its label ids.

    Raises:
        FileNotFoundError: the root, the images or a ground-truth file is
            missing (the message names the path expected).
        ValueError: unknown task, or a panoptic json without an entry for an image.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        task: str = "panoptic",
        transform: Callable[[Sample], Sample] | None = None,
        metadata: ClassMetadata = CITYSCAPES,
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}: choose one of {TASKS}")
        self.root = Path(root)
        self.split = split
        self.task = task
        self.transform = transform
        self.metadata = metadata
        self._label_to_train = layout.label_to_train_table(metadata)
        if not self.root.is_dir():
            raise FileNotFoundError(f"Cityscapes root {self.root} does not exist or is not a directory")
        image_dir = self.root / "leftImg8bit" / split
        files = sorted(image_dir.glob(f"*/*{layout.IMAGE_SUFFIX}"))
        if not files:
            raise FileNotFoundError(
                f"no Cityscapes images under {image_dir}: expected files like "
                f"{image_dir}/<city>/<city>_<seq>_<frame>{layout.IMAGE_SUFFIX}"
            )
        self.frames = [layout.FrameName.parse(f.name) for f in files]
        if task == "semantic":
            for frame in self.frames:
                path = layout.gt_path(self.root, split, frame, layout.LABEL_IDS_SUFFIX)
                if not path.is_file():
                    raise FileNotFoundError(f"missing semantic ground truth {path} for image {frame.stem}")
        else:
            self._annotations = self._load_panoptic_index()

    def _load_panoptic_index(self) -> dict[str, dict]:
        """Panoptic json entries by image id, checked to cover every image."""
        json_path = layout.panoptic_json_path(self.root, self.split)
        if not json_path.is_file():
            raise FileNotFoundError(
                f"missing panoptic ground truth {json_path}: create it with cityscapesScripts' "
                "createPanopticImgs (csCreatePanopticImgs) or write synthetic data with `ros-seg synth`"
            )
        annotations = {a["image_id"]: a for a in layout.load_panoptic_json(json_path)["annotations"]}
        png_dir = layout.panoptic_png_dir(self.root, self.split)
        if not png_dir.is_dir():
            raise FileNotFoundError(f"missing panoptic PNG folder {png_dir} (next to {json_path.name})")
        for frame in self.frames:
            if frame.stem not in annotations:
                raise ValueError(f"{json_path} has no annotation for image {frame.stem}")
        return annotations

    def __len__(self) -> int:
        return len(self.frames)

    def classes_per_image(self) -> list[np.ndarray]:
        """Train ids present in each image (sorted int64 arrays), without decoding any image.

        Panoptic task: read from the json's segments (crowd regions count: they
        show the class); semantic task: from the ``*_gtFine_labelIds.png`` files,
        one read each. The order is that of the samples.
        """
        present = []
        for frame in self.frames:
            if self.task == "semantic":
                path = layout.gt_path(self.root, self.split, frame, layout.LABEL_IDS_SUFFIX)
                label_ids = np.unique(layout.read_png(path, 1))
                train_ids = self._label_to_train[np.minimum(label_ids, layout.LABEL_ID_TABLE_SIZE - 1)]
            else:
                categories = [s["category_id"] for s in self._annotations[frame.stem]["segments_info"]]
                categories = np.clip(np.asarray(categories, dtype=np.int64), 0, layout.LABEL_ID_TABLE_SIZE - 1)
                train_ids = self._label_to_train[categories]
            train_ids = np.unique(train_ids.astype(np.int64))
            present.append(train_ids[train_ids < self.metadata.num_classes])
        return present

    def __getitem__(self, index: int) -> Sample:
        frame = self.frames[index]
        image = layout.read_png(layout.image_path(self.root, self.split, frame), 3)
        if self.task == "semantic":
            sample = self._semantic_sample(frame)
        else:
            sample = self._panoptic_sample(frame)
        if sample["semantic"].shape != image.shape[:2]:
            raise ValueError(
                f"ground truth of {frame.stem} is {sample['semantic'].shape[1]}x{sample['semantic'].shape[0]} "
                f"but its image is {image.shape[1]}x{image.shape[0]}"
            )
        sample["image"] = image
        sample["name"] = frame.stem
        return self.transform(sample) if self.transform is not None else sample

    def _semantic_sample(self, frame: layout.FrameName) -> Sample:
        label_ids = layout.read_png(layout.gt_path(self.root, self.split, frame, layout.LABEL_IDS_SUFFIX), 1)
        semantic = self._label_to_train[np.minimum(label_ids, layout.LABEL_ID_TABLE_SIZE - 1)]
        present = np.flatnonzero(np.bincount(semantic.ravel(), minlength=256)[: self.metadata.num_classes])
        return {
            "semantic": semantic,
            "masks": semantic[None] == present[:, None, None].astype(np.uint8),
            "classes": present.astype(np.int64),
            "is_thing": np.array([self.metadata.is_thing[c] for c in present], dtype=bool),
            "is_crowd": np.zeros(len(present), dtype=bool),
            "segment_ids": np.array([self.metadata.label_ids[c] for c in present], dtype=np.int32),
        }

    def _panoptic_sample(self, frame: layout.FrameName) -> Sample:
        annotation = self._annotations[frame.stem]
        png = layout.annotation_png_path(layout.panoptic_png_dir(self.root, self.split), annotation,
                                         layout.panoptic_json_path(self.root, self.split))
        panoptic = layout.rgb_to_id(layout.read_png(png, 3))
        segments = sorted(annotation["segments_info"], key=lambda s: s["id"])
        ids = np.array([s["id"] for s in segments], dtype=np.int64)
        categories = np.array([s["category_id"] for s in segments], dtype=np.int64)
        unknown = categories[(categories < 0) | (categories >= layout.LABEL_ID_TABLE_SIZE)]
        classes = self._label_to_train[np.clip(categories, 0, layout.LABEL_ID_TABLE_SIZE - 1)].astype(np.int64)
        if len(unknown) or (classes == self.metadata.ignore_id).any():
            bad = sorted(set(categories[classes == self.metadata.ignore_id].tolist()) | set(unknown.tolist()))
            raise ValueError(
                f"panoptic annotation of {frame.stem} has category ids {bad} that are not label ids of the "
                f"evaluated classes {list(self.metadata.label_ids)}"
            )
        # Position of each pixel's id in `ids`; position len(ids) holds a sentinel that matches no pixel.
        index = np.minimum(np.searchsorted(ids, panoptic), len(ids))  # (H, W)
        known = np.append(ids, -1)[index] == panoptic
        semantic = np.where(known, np.append(classes, 0)[index], self.metadata.ignore_id).astype(np.uint8)
        masks = (index[None] == np.arange(len(ids))[:, None, None]) & known[None]  # (K, H, W)
        return {
            "semantic": semantic,
            "masks": masks,
            "classes": classes,
            "is_thing": np.array([self.metadata.is_thing[c] for c in classes], dtype=bool),
            "is_crowd": np.array([bool(s.get("iscrowd", 0)) for s in segments], dtype=bool),
            "segment_ids": ids.astype(np.int32),
        }
