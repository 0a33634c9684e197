"""The Cityscapes file layout and its panoptic ground-truth format.

One module serves the dataset reader, the synthetic scene writer and the
scoring of prediction files, so all three agree on:

- file naming: ``leftImg8bit/{split}/{city}/{city}_{seq:06d}_{frame:06d}_leftImg8bit.png``
  and ``gtFine/{split}/{city}/{city}_{seq:06d}_{frame:06d}_gtFine_{labelIds,instanceIds,color}.png``;
- the COCO-panoptic ground truth that cityscapesScripts' ``createPanopticImgs``
  writes: ``gtFine/cityscapes_panoptic_{split}.json`` and one RGB PNG per image
  in ``gtFine/cityscapes_panoptic_{split}/``, where a pixel's segment id is
  ``R + 256 * G + 256**2 * B`` and 0 is void. Segment ids follow the
  ``instanceIds`` convention (``label_id * 1000 + instance`` for an object,
  ``label_id`` for stuff and for crowd regions of a thing class); segments of
  classes ignored in evaluation are left out (void).

PNG input/output goes through OpenCV (a runtime dependency); images are RGB in
memory.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage

from ros_seg.models.class_metadata import ClassMetadata
from ros_seg.models.quoted_excerpt import excerpt

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"
INSTANCE_IDS_SUFFIX = "_gtFine_instanceIds.png"
COLOR_SUFFIX = "_gtFine_color.png"
PANOPTIC_SUFFIX = "_gtFine_panoptic.png"

# Cityscapes label ids above this (caravan 29, trailer 30, ...) never exceed 33;
# lookup tables over label ids are sized for any uint8 value.
LABEL_ID_TABLE_SIZE = 256
# instanceIds: label_id * INSTANCE_OFFSET + instance for objects.
INSTANCE_OFFSET = 1000

# Cityscapes label categories (the panoptic json's "supercategory") per label id
# of the 19 evaluated classes, from the official label table.
SUPERCATEGORIES = {
    7: "flat", 8: "flat",
    11: "construction", 12: "construction", 13: "construction",
    17: "object", 19: "object", 20: "object",
    21: "nature", 22: "nature",
    23: "sky",
    24: "human", 25: "human",
    26: "vehicle", 27: "vehicle", 28: "vehicle", 31: "vehicle", 32: "vehicle", 33: "vehicle",
}


@dataclass(frozen=True, order=True)
class FrameName:
    """Identity of one Cityscapes frame: ``{city}_{sequence:06d}_{frame:06d}``."""

    city: str
    sequence: int
    frame: int

    def __post_init__(self) -> None:
        if not self.city or "_" in self.city or os.sep in self.city:
            raise ValueError(
                f"invalid Cityscapes city name {self.city!r}: it must be non-empty, without '_' or '{os.sep}'"
            )

    @property
    def stem(self) -> str:
        """The prefix shared by all files of the frame, also the panoptic image id."""
        return f"{self.city}_{self.sequence:06d}_{self.frame:06d}"

    @classmethod
    def parse(cls, file_name: str) -> FrameName:
        """Frame of a Cityscapes file name such as ``aachen_000000_000019_leftImg8bit.png``."""
        parts = os.path.basename(file_name).split("_")
        if len(parts) < 3 or not parts[1].isdigit() or not parts[2][:6].isdigit():
            raise ValueError(f"{file_name!r} is not a Cityscapes file name: expected <city>_<seq>_<frame>_...")
        return cls(parts[0], int(parts[1]), int(parts[2][:6]))


def image_path(root: Path, split: str, name: FrameName) -> Path:
    """``root/leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png``."""
    return Path(root) / "leftImg8bit" / split / name.city / f"{name.stem}{IMAGE_SUFFIX}"


def gt_path(root: Path, split: str, name: FrameName, suffix: str) -> Path:
    """``root/gtFine/{split}/{city}/{stem}{suffix}`` for one of the ``*_SUFFIX`` names."""
    return Path(root) / "gtFine" / split / name.city / f"{name.stem}{suffix}"


def panoptic_json_path(root: Path, split: str) -> Path:
    """``root/gtFine/cityscapes_panoptic_{split}.json``."""
    return Path(root) / "gtFine" / f"cityscapes_panoptic_{split}.json"


def panoptic_png_dir(root: Path, split: str) -> Path:
    """``root/gtFine/cityscapes_panoptic_{split}/``, the folder of the panoptic PNGs."""
    return Path(root) / "gtFine" / f"cityscapes_panoptic_{split}"


def annotation_png_path(folder: Path, annotation: dict, json_path: Path) -> Path:
    """The PNG a panoptic annotation of `json_path` names, in `folder`: its file_name must be a file name inside
    that folder (no absolute path, no '..', no link leading out), so a json cannot make us read other files."""
    file_name = annotation.get("file_name")
    where = f"'file_name' of annotation {excerpt(annotation.get('image_id'))} in {json_path}"
    if not isinstance(file_name, str) or not file_name or "\0" in file_name:
        raise ValueError(f"{where} must be the name of a PNG file, got {excerpt(file_name)}")
    path = Path(folder) / file_name
    if Path(file_name).is_absolute() or not path.resolve().is_relative_to(Path(folder).resolve()):
        raise ValueError(f"{where} names {excerpt(file_name)}, which is outside {folder}: refused")
    return path


def read_png(path: Path, channels: int) -> np.ndarray:
    """Read a PNG as stored: 1 channel -> (H, W) (8 or 16 bit), 3 -> (H, W, 3) RGB.

    Raises FileNotFoundError for a missing file and ValueError for an
    unreadable one or a wrong channel count, naming the file.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"missing file {path}")
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise ValueError(f"cannot read {path} as an image")
    found = 1 if array.ndim == 2 else array.shape[2]
    if found != channels:
        raise ValueError(f"{path} has {found} channel(s), expected {channels}")
    if channels == 3:
        array = cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    return array


def write_png(path: Path, array: np.ndarray, compression: int = 1) -> None:
    """Write (H, W) uint8/uint16 or (H, W, 3) RGB uint8 as PNG, creating folders."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    data = cv2.cvtColor(array, cv2.COLOR_RGB2BGR) if array.ndim == 3 else array
    if not cv2.imwrite(str(path), data, [cv2.IMWRITE_PNG_COMPRESSION, compression]):
        raise OSError(f"could not write {path}")


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 panoptic PNG -> (H, W) int32 segment ids, R + 256 G + 256^2 B."""
    rgb = rgb.astype(np.int32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """(H, W) segment ids -> (H, W, 3) uint8 RGB, the inverse of `rgb_to_id`."""
    ids = ids.astype(np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)


def label_to_train_table(metadata: ClassMetadata) -> np.ndarray:
    """(256,) uint8 lookup table: Cityscapes label id -> train id, ignore id elsewhere."""
    table = np.full(LABEL_ID_TABLE_SIZE, metadata.ignore_id, dtype=np.uint8)
    table[list(metadata.label_ids)] = np.arange(metadata.num_classes, dtype=np.uint8)
    return table


def panoptic_categories(metadata: ClassMetadata) -> list[dict]:
    """The json ``categories`` list: one entry per evaluated class, id = label id."""
    return [
        {
            "id": int(label_id),
            "name": name,
            "color": list(color),
            "supercategory": SUPERCATEGORIES.get(label_id, "void"),
            "isthing": int(thing),
        }
        for name, label_id, color, thing in zip(metadata.names, metadata.label_ids, metadata.colors, metadata.is_thing)
    ]


def panoptic_from_instance_ids(instance_ids: np.ndarray, metadata: ClassMetadata) -> tuple[np.ndarray, list[dict]]:
    """Convert an ``instanceIds`` map to a panoptic id map and its ``segments_info``.

    Follows createPanopticImgs: every distinct value is one segment with the
    same id; ids >= 1000 are objects (iscrowd 0), smaller ids of a thing class
    are crowd regions (iscrowd 1); classes outside `metadata` become void (0).

    Args:
        instance_ids: (H, W) integer map in the Cityscapes instanceIds convention.
        metadata: the evaluated classes (label ids and thing flags).

    Returns:
        (H, W) int32 segment ids (0 = void) and the segments in id order, each
        {"id", "category_id" (label id), "area", "bbox" [x, y, w, h], "iscrowd"}.
    """
    ids = instance_ids.astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= 2**24):
        raise ValueError(f"instanceIds values must lie in [0, 2^24), found {ids.min()}..{ids.max()}")
    areas = np.bincount(ids.ravel())
    values = np.flatnonzero(areas)
    index_of_value = np.zeros(len(areas), dtype=np.int32)
    index_of_value[values] = np.arange(len(values), dtype=np.int32)
    inverse = index_of_value[ids]  # (H, W) index into values
    areas = areas[values]
    label_ids = np.where(values >= INSTANCE_OFFSET, values // INSTANCE_OFFSET, values)
    label_to_index = {label_id: i for i, label_id in enumerate(metadata.label_ids)}
    kept = np.array([int(label) in label_to_index for label in label_ids], dtype=bool)

    panoptic = np.where(kept, values, 0).astype(np.int32)[inverse]
    boxes = ndimage.find_objects(inverse + 1)
    segments = []
    for k in np.flatnonzero(kept):
        rows, cols = boxes[k]
        thing = metadata.is_thing[label_to_index[int(label_ids[k])]]
        segments.append(
            {
                "id": int(values[k]),
                "category_id": int(label_ids[k]),
                "area": int(areas[k]),
                "bbox": [cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start],
                "iscrowd": int(thing and values[k] < INSTANCE_OFFSET),
            }
        )
    return panoptic, segments


def panoptic_image_entry(name: FrameName, height: int, width: int) -> dict:
    """The json ``images`` entry of one frame.

    Its file_name is ``{stem}_gtFine_leftImg8bit.png``, as createPanopticImgs
    names it (from the instanceIds file name), not the image's real name.
    """
    file_name = f"{name.stem}_gtFine{IMAGE_SUFFIX}"
    return {"id": name.stem, "file_name": file_name, "width": int(width), "height": int(height)}


def panoptic_annotation_entry(name: FrameName, segments: list[dict]) -> dict:
    """The json ``annotations`` entry of one frame; its PNG is ``{stem}_gtFine_panoptic.png``."""
    return {"image_id": name.stem, "file_name": f"{name.stem}{PANOPTIC_SUFFIX}", "segments_info": segments}


def write_panoptic_json(path: Path, images: list[dict], annotations: list[dict], metadata: ClassMetadata) -> None:
    """Write a panoptic ground-truth json (``images``, ``annotations``, ``categories``)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    data = {"images": images, "annotations": annotations, "categories": panoptic_categories(metadata)}
    with open(path, "w") as f:
        json.dump(data, f, sort_keys=True, indent=4)


def load_panoptic_json(path: Path) -> dict:
    """Read a COCO-panoptic json and check it has ``annotations`` (a list of dicts).

    Raises FileNotFoundError naming the file, or ValueError for malformed content.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"missing panoptic json {path}")
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read panoptic json {path}: {exc}") from exc
    annotations = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(annotations, list) or not all(
        isinstance(a, dict) and "image_id" in a and "file_name" in a and "segments_info" in a for a in annotations
    ):
        raise ValueError(
            f"{path} is not a COCO-panoptic json: expected 'annotations', a list of "
            "{'image_id', 'file_name', 'segments_info'}"
        )
    return data
