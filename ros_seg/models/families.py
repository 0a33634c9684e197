"""The model families by their `meta_architecture` name, and the family of a model config."""
from __future__ import annotations

from ros_seg.models.class_metadata import ClassMetadata, class_metadata
from ros_seg.models.mask_former_family import MaskFormerFamily
from ros_seg.models.meta_architecture import MetaArchitecture
from ros_seg.models.model_config import ModelConfig
from ros_seg.models.panoptic_segformer.family import PanopticSegFormerFamily
from ros_seg.models.strict_config import ConfigError

FAMILIES: dict[str, type[MetaArchitecture]] = {
    "mask_former": MaskFormerFamily,
    "panoptic_segformer": PanopticSegFormerFamily,
}


def model_family(config: ModelConfig, metadata: ClassMetadata | None = None) -> MetaArchitecture:
    """The family of `config`, for the label set `metadata` (default: that of `config.dataset`)."""
    if config.meta_architecture not in FAMILIES:
        raise ConfigError(
            f"unknown meta_architecture {config.meta_architecture!r} in model {config.name!r}: "
            f"choose one of {sorted(FAMILIES)}"
        )
    return FAMILIES[config.meta_architecture](config, metadata or class_metadata(config.dataset))
