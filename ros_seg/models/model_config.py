"""Model configuration: a YAML file under ros_seg/configs/models/ parsed into typed, checked sections.

Every key is known: a misspelled or unknown key is an error naming the key, the
section and the file, so a typo never silently falls back to a default. A config
may extend another with `_base_: other.yaml` and give only what differs.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ros_seg.models.quoted_excerpt import excerpt
from ros_seg.models.strict_config import ConfigError, build_dataclass, read_yaml_with_bases


@dataclass
class BackboneConfig:
    name: str = "resnet50"


@dataclass
class PixelDecoderConfig:
    """Pixel decoder; the encoder fields serve "msdeformattn" (Mask2Former) and "proscale" (PRO-SCALE)."""

    name: str = "pem"
    conv_dim: int = 128
    mask_dim: int = 256
    encoder_layers: int = 6
    proscale_layers: list[int] = field(default_factory=lambda: [3, 3, 3])
    num_heads: int = 8
    num_points: int = 4
    ffn_dim: int = 1024
    lpe: bool = True
    trc: bool = True


@dataclass
class TransformerDecoderConfig:
    name: str = "masked"
    hidden_dim: int = 256
    num_queries: int = 100
    num_heads: int = 8
    dim_feedforward: int = 2048
    num_layers: int = 6
    pre_norm: bool = True
    cross_attention: str = "pem"


@dataclass
class InputConfig:
    pixel_mean: list[float] = field(default_factory=lambda: [123.675, 116.28, 103.53])
    pixel_std: list[float] = field(default_factory=lambda: [58.395, 57.12, 57.375])
    size_divisibility: int = 32


@dataclass
class InferenceConfig:
    """Default thresholds of the panoptic merge (ros_seg.models.meta_architecture.PostprocessOptions)."""

    score_threshold: float = 0.8
    overlap_threshold: float = 0.8


# Keys that configs and checkpoints written before a rename still use: {section: {old name: new name}}.
RENAMED_KEYS = {"inference": {"object_mask_threshold": "score_threshold"}}


@dataclass
class PanopticSegFormerConfig:
    """Panoptic SegFormer (meta_architecture "panoptic_segformer"); widths, depths and the mask threshold.

    The mask-wise merging thresholds are inference.score_threshold (confidence
    below which a segment is dropped) and inference.overlap_threshold (share of its
    mask a thing segment must still paint); stuff_overlap_threshold is that share for
    stuff segments (the authors: 0.6 for things, 0.8 for stuff). max_detections:
    (query, thing class) pairs the mask decoder scores at inference.
    """

    hidden_dim: int = 256
    num_heads: int = 8
    num_points: int = 4
    num_thing_queries: int = 100
    encoder_layers: int = 6
    location_layers: int = 6
    thing_mask_layers: int = 4
    stuff_mask_layers: int = 6
    ffn_dim: int = 1024
    mask_threshold: float = 0.5
    max_detections: int = 100
    stuff_overlap_threshold: float = 0.8


META_ARCHITECTURES = ("mask_former", "panoptic_segformer")

MAX_SIZE = 1 << 16
"""Largest width, depth or count any integer of a model config may give (a larger one only exhausts memory)."""
MAY_BE_ZERO = {"pixel_decoder.encoder_layers", "panoptic_segformer.encoder_layers"}
"""Integer keys that may be 0; every other one must be >= 1."""


@dataclass
class ModelConfig:
    """A whole model: label set, architecture pieces, input normalization, inference thresholds."""

    name: str = "model"
    dataset: str = "cityscapes"
    meta_architecture: str = "mask_former"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    pixel_decoder: PixelDecoderConfig = field(default_factory=PixelDecoderConfig)
    transformer_decoder: TransformerDecoderConfig = field(default_factory=TransformerDecoderConfig)
    input: InputConfig = field(default_factory=InputConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    panoptic_segformer: PanopticSegFormerConfig = field(default_factory=PanopticSegFormerConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> ModelConfig:
        config = build_dataclass(cls, _with_current_keys(data, source), source)
        if config.meta_architecture not in META_ARCHITECTURES:
            raise ConfigError(
                f"'meta_architecture' in {source} must be one of {META_ARCHITECTURES}, got {config.meta_architecture!r}"
            )
        _check_values(config, source)
        return config

    @classmethod
    def from_yaml(cls, path: str | Path) -> ModelConfig:
        """The config in `path`; `_base_: other.yaml` in it extends that file (see read_yaml_with_bases)."""
        data, source = read_yaml_with_bases(path, "model config")
        return cls.from_dict(data, source=source)


def _check_values(config: ModelConfig, source: str) -> None:
    """Ranges the types cannot express: sizes and counts in [1, MAX_SIZE] (MAY_BE_ZERO from 0), thresholds in
    [0, 1], three finite normalization means and positive deviations."""

    def fail(key: str, requirement: str, value: Any) -> None:
        raise ConfigError(f"'{key}' in {source} must be {requirement}, got {excerpt(value)}")

    for section in dataclasses.fields(config):
        values = getattr(config, section.name)
        if not dataclasses.is_dataclass(values):
            continue
        for name, annotation in typing.get_type_hints(type(values)).items():
            key, value = f"{section.name}.{name}", getattr(values, name)
            numbers = value if isinstance(value, list) else [value]
            if annotation in (int, list[int]):
                low = 0 if key in MAY_BE_ZERO else 1
                if not numbers or not all(low <= v <= MAX_SIZE for v in numbers):
                    fail(key, f"in [{low}, {MAX_SIZE}]" + (" (each, at least one)" if isinstance(value, list) else ""),
                         value)
            elif key.endswith("_threshold") and not 0.0 <= value <= 1.0:
                fail(key, "in [0, 1]", value)
    normalization = config.input
    if len(normalization.pixel_mean) != 3 or not all(math.isfinite(v) for v in normalization.pixel_mean):
        fail("input.pixel_mean", "three finite numbers (R, G, B)", normalization.pixel_mean)
    if len(normalization.pixel_std) != 3 or not all(0.0 < v < math.inf for v in normalization.pixel_std):
        fail("input.pixel_std", "three positive finite numbers (R, G, B)", normalization.pixel_std)


def _with_current_keys(data: dict[str, Any], source: str) -> dict[str, Any]:
    """`data` with the old names of RENAMED_KEYS replaced by the current ones (a copy where any is found)."""
    if not isinstance(data, dict):
        return data  # build_dataclass says what it must be
    data = dict(data)
    for section, renames in RENAMED_KEYS.items():
        values = data.get(section)
        if not isinstance(values, dict):
            continue
        values = dict(values)
        for old, new in renames.items():
            if old not in values:
                continue
            if new in values:
                raise ConfigError(
                    f"{section} in {source} gives both {old!r} and its new name {new!r}: keep only {new!r}"
                )
            values[new] = values.pop(old)
        data[section] = values
    return data
