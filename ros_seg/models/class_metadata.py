"""Class metadata of a segmentation label set: names, display colors, thing flags.

Cityscapes' 19 training classes are the default label set of every model; the
Cityscapes label ids (used by the official evaluation files) are kept beside the
train ids so results can be written in the official formats. The label sets of
the published checkpoints (COCO panoptic 133, ADE20K 150, Mapillary Vistas 65)
follow the class order of the official code, so class id = logit index.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ros_seg.models.ade20k_classes import ADE20K_150
from ros_seg.models.coco_panoptic_classes import COCO_PANOPTIC
from ros_seg.models.mapillary_vistas_classes import MAPILLARY_VISTAS_65
from ros_seg.models.quoted_excerpt import excerpt

IGNORE_ID = 255


@dataclass(frozen=True)
class ClassMetadata:
    """Names, colors and thing flags of a label set, indexed by train id.

    Args:
        names: class name per train id.
        colors: (r, g, b) display color per train id.
        is_thing: True for countable classes that get one segment per instance.
        label_ids: dataset label id per train id (Cityscapes `labelIds`), used
            when writing official evaluation files.
        ignore_id: value of unlabeled pixels in semantic maps.
    """

    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    is_thing: tuple[bool, ...]
    label_ids: tuple[int, ...]
    ignore_id: int = IGNORE_ID

    def __post_init__(self) -> None:
        n = len(self.names)
        if not (len(self.colors) == len(self.is_thing) == len(self.label_ids) == n):
            raise ValueError(
                f"class metadata lists differ in length: {n} names, {len(self.colors)} colors, "
                f"{len(self.is_thing)} thing flags, {len(self.label_ids)} label ids"
            )

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def thing_ids(self) -> tuple[int, ...]:
        return tuple(i for i, thing in enumerate(self.is_thing) if thing)

    @property
    def stuff_ids(self) -> tuple[int, ...]:
        return tuple(i for i, thing in enumerate(self.is_thing) if not thing)

    def to_dict(self) -> dict:
        """Plain-data form stored in checkpoints."""
        return {
            "names": list(self.names),
            "colors": [list(c) for c in self.colors],
            "is_thing": list(self.is_thing),
            "label_ids": list(self.label_ids),
            "ignore_id": self.ignore_id,
        }

    @classmethod
    def from_dict(cls, data: dict, source: str = "<dict>") -> ClassMetadata:
        """The metadata of a `to_dict` mapping read from `source` (named in errors), every entry checked."""
        if not isinstance(data, dict):
            raise ValueError(f"class metadata in {source} must be a mapping, got {type(data).__name__}")
        missing = [k for k in ("names", "colors", "is_thing", "label_ids") if k not in data]
        if missing:
            raise ValueError(f"class metadata in {source} lacks {', '.join(missing)}")

        def entries(key: str, valid: Callable[[Any], bool], requirement: str) -> list[Any]:
            values = data[key]
            if not isinstance(values, list | tuple) or not values:
                raise ValueError(f"'{key}' of the class metadata in {source} must be a non-empty list, "
                                 f"got {excerpt(values)}")
            bad = next((i for i, v in enumerate(values) if not valid(v)), None)
            if bad is not None:
                raise ValueError(f"'{key}[{bad}]' of the class metadata in {source} must be {requirement}, "
                                 f"got {excerpt(values[bad])}")
            return list(values)

        def is_int(v: Any, low: int, high: int) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high

        names = entries("names", lambda v: isinstance(v, str), "a string")
        colors = entries("colors", lambda v: isinstance(v, list | tuple) and len(v) == 3
                         and all(is_int(c, 0, 255) for c in v), "three integers in [0, 255]")
        is_thing = entries("is_thing", lambda v: isinstance(v, bool), "true or false")
        label_ids = entries("label_ids", lambda v: is_int(v, 0, 1 << 31), "an integer >= 0")
        ignore_id = data.get("ignore_id", IGNORE_ID)
        if not is_int(ignore_id, 0, 65535):
            raise ValueError(f"'ignore_id' of the class metadata in {source} must be an integer in [0, 65535], "
                             f"got {excerpt(ignore_id)}")
        try:
            return cls(tuple(names), tuple(tuple(c) for c in colors), tuple(is_thing), tuple(label_ids), ignore_id)
        except ValueError as exc:
            raise ValueError(f"class metadata in {source}: {exc}") from None


# Cityscapes training classes: (name, label id, color, is_thing), from the official label table.
_CITYSCAPES = (
    ("road", 7, (128, 64, 128), False),
    ("sidewalk", 8, (244, 35, 232), False),
    ("building", 11, (70, 70, 70), False),
    ("wall", 12, (102, 102, 156), False),
    ("fence", 13, (190, 153, 153), False),
    ("pole", 17, (153, 153, 153), False),
    ("traffic light", 19, (250, 170, 30), False),
    ("traffic sign", 20, (220, 220, 0), False),
    ("vegetation", 21, (107, 142, 35), False),
    ("terrain", 22, (152, 251, 152), False),
    ("sky", 23, (70, 130, 180), False),
    ("person", 24, (220, 20, 60), True),
    ("rider", 25, (255, 0, 0), True),
    ("car", 26, (0, 0, 142), True),
    ("truck", 27, (0, 0, 70), True),
    ("bus", 28, (0, 60, 100), True),
    ("train", 31, (0, 80, 100), True),
    ("motorcycle", 32, (0, 0, 230), True),
    ("bicycle", 33, (119, 11, 32), True),
)


def _from_table(table: tuple[tuple[str, int, tuple[int, int, int], bool], ...]) -> ClassMetadata:
    """Metadata of a (name, dataset id, color, is_thing) table, train id = position."""
    return ClassMetadata(
        names=tuple(c[0] for c in table),
        label_ids=tuple(c[1] for c in table),
        colors=tuple(c[2] for c in table),
        is_thing=tuple(c[3] for c in table),
    )


CITYSCAPES = _from_table(_CITYSCAPES)
COCO_PANOPTIC_METADATA = _from_table(COCO_PANOPTIC)
ADE20K_METADATA = _from_table(ADE20K_150)
MAPILLARY_VISTAS_METADATA = _from_table(MAPILLARY_VISTAS_65)

DATASETS = {
    "cityscapes": CITYSCAPES,
    "coco_panoptic": COCO_PANOPTIC_METADATA,
    "ade20k": ADE20K_METADATA,
    "mapillary_vistas": MAPILLARY_VISTAS_METADATA,
}


def class_metadata(dataset: str) -> ClassMetadata:
    """Metadata of a named label set (`cityscapes`, `coco_panoptic`, `ade20k`, `mapillary_vistas`)."""
    try:
        return DATASETS[dataset]
    except KeyError:
        raise ValueError(f"unknown dataset {dataset!r}: choose one of {sorted(DATASETS)}") from None
