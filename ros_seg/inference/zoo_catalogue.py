"""The official checkpoints `ros-seg zoo` can fetch: what each is, where the authors publish it, how to check it.

Every fact here is from the authors' own pages, read at these commits:
- Mask2Former: facebookresearch/Mask2Former @ 9b0651c, MODEL_ZOO.md (ResNet-50 rows; the
  numbers are the table's, the links its download links). "Any model on this page contains its
  md5 prefix in its file name": model_final_<6 hex digits>.pkl is checked against the file's MD5.
  The page gives no file sizes.
- PRO-SCALE: abhishekaich27/proscale-pytorch @ 2e9cf4c, README.md: the weights are in a Google
  Drive folder (no direct file link, no checksum, no size); file name from its test command.
- Panoptic SegFormer: zhiqi-li/Panoptic-SegFormer @ cdb9b68, README.md: a GitHub release
  download (no checksum, no size).
- PEM (NiccoloCavagnero/PEM @ 2dfeb3d) publishes no trained checkpoints: none is listed.
Published accuracies are the authors' figures on their validation sets; ros_seg has not measured
them (the datasets are not available where it is developed).
"""
from __future__ import annotations

from dataclasses import dataclass

ZOO_PREFIX = "zoo:"

_M2F_ZOO = "https://github.com/facebookresearch/Mask2Former/blob/main/MODEL_ZOO.md"
_M2F_FILES = "https://dl.fbaipublicfiles.com/maskformer/mask2former"
_PROSCALE_FOLDER = "https://drive.google.com/drive/folders/19gEcvFE9tVKost0rmYD5pHgfgGBZl30A?usp=sharing"
_PSF_README = "https://github.com/zhiqi-li/Panoptic-SegFormer#results"


class ZooError(ValueError):
    """A zoo request that cannot be served; the message says what was wrong and what to run."""


@dataclass(frozen=True)
class ZooEntry:
    """One published checkpoint.

    Args:
        name: zoo name (`ros-seg zoo pull NAME`, node parameter `weights:=zoo:NAME`).
        model: the ros_seg model config the checkpoint converts into.
        dataset: the label set it was trained on (ros_seg.models.class_metadata names).
        task: what it was trained and published for: "panoptic" or "semantic".
        published: the authors' accuracy figures, e.g. {"PQ": 62.1, "mIoU": 77.5} (percent).
        official_config: the authors' config file the checkpoint was trained with.
        page: where the authors list the checkpoint.
        url: direct download link; None where the authors give none (download by hand).
        file_name: the published file's name.
        md5_prefix: leading hex digits of the file's MD5 as the authors publish them; None if they give none.
        size: the file's size in bytes as published; None if the authors give none.
    """

    name: str
    model: str
    dataset: str
    task: str
    published: dict[str, float]
    official_config: str
    page: str
    url: str | None
    file_name: str
    md5_prefix: str | None = None
    size: int | None = None

    @property
    def checksum_text(self) -> str:
        """The published checksum in words."""
        return f"md5 {self.md5_prefix}..." if self.md5_prefix else "none published"


def _mask2former(name: str, model: str, dataset: str, task: str, published: dict[str, float], path: str,
                 config: str) -> ZooEntry:
    """A Mask2Former model-zoo entry: `path` under dl.fbaipublicfiles.com/maskformer/mask2former."""
    file_name = path.rsplit("/", 1)[-1]
    md5_prefix = file_name.removeprefix("model_final_").removesuffix(".pkl")
    return ZooEntry(name, model, dataset, task, published, config, _M2F_ZOO, f"{_M2F_FILES}/{path}", file_name,
                    md5_prefix=md5_prefix)


ENTRIES: tuple[ZooEntry, ...] = (
    _mask2former("m2f_r50_cityscapes_panoptic", "m2f_r50", "cityscapes", "panoptic",
                 {"PQ": 62.1, "AP": 37.3, "mIoU": 77.5},
                 "cityscapes/panoptic/maskformer2_R50_bs16_90k/model_final_4ab90c.pkl",
                 "configs/cityscapes/panoptic-segmentation/maskformer2_R50_bs16_90k.yaml"),
    _mask2former("m2f_r50_cityscapes_semantic", "m2f_r50", "cityscapes", "semantic",
                 {"mIoU": 79.4},
                 "cityscapes/semantic/maskformer2_R50_bs16_90k/model_final_cc1b1f.pkl",
                 "configs/cityscapes/semantic-segmentation/maskformer2_R50_bs16_90k.yaml"),
    _mask2former("m2f_r50_coco_panoptic", "m2f_r50_coco", "coco_panoptic", "panoptic",
                 {"PQ": 51.9, "AP": 41.7, "mIoU": 61.7},
                 "coco/panoptic/maskformer2_R50_bs16_50ep/model_final_94dc52.pkl",
                 "configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml"),
    _mask2former("m2f_r50_ade20k_panoptic", "m2f_r50_ade20k", "ade20k", "panoptic",
                 {"PQ": 39.7, "AP": 26.5, "mIoU": 46.1},
                 "ade20k/panoptic/maskformer2_R50_bs16_160k/model_final_5c90d4.pkl",
                 "configs/ade20k/panoptic-segmentation/maskformer2_R50_bs16_160k.yaml"),
    _mask2former("m2f_r50_ade20k_semantic", "m2f_r50_ade20k", "ade20k", "semantic",
                 {"mIoU": 47.2},
                 "ade20k/semantic/maskformer2_R50_bs16_160k/model_final_500878.pkl",
                 "configs/ade20k/semantic-segmentation/maskformer2_R50_bs16_160k.yaml"),
    _mask2former("m2f_r50_mapillary_vistas_panoptic", "m2f_r50_mapillary_vistas", "mapillary_vistas", "panoptic",
                 {"PQ": 36.3, "mIoU": 50.7},
                 "mapillary_vistas/panoptic/maskformer_R50_bs16_300k/model_final_4e9874.pkl",
                 "configs/mapillary-vistas/panoptic-segmentation/maskformer_R50_bs16_300k.yaml"),
    ZooEntry("proscale_r50_333_coco_panoptic", "proscale_r50_333_coco", "coco_panoptic", "panoptic",
             {"PQ": 51.44}, "configs/res50_proscale_3_3_3_coco.yaml", _PROSCALE_FOLDER, None,
             "r50_proscale_3_3_3_coco.pth"),
    ZooEntry("panoptic_segformer_r50_coco_panoptic", "panoptic_segformer_r50_coco", "coco_panoptic", "panoptic",
             {"PQ": 49.6}, "configs/panformer/panformer_r50_24e_coco_panoptic.py", _PSF_README,
             "https://github.com/zhiqi-li/Panoptic-SegFormer/releases/download/v1.0/panoptic_segformer_r50_2x.pth",
             "panoptic_segformer_r50_2x.pth"),
)


def zoo_names() -> list[str]:
    """Names of every zoo entry, in catalogue order."""
    return [entry.name for entry in ENTRIES]


def zoo_entry(name: str) -> ZooEntry:
    """The entry called `name` (a leading 'zoo:' is allowed); ZooError listing the names otherwise."""
    name = name.removeprefix(ZOO_PREFIX)
    for entry in ENTRIES:
        if entry.name == name:
            return entry
    raise ZooError(f"unknown zoo model {name!r}: choose one of {', '.join(zoo_names())} (`ros-seg zoo list`)")
