"""Named models: a name like `pem_r50` maps to ros_seg/configs/models/pem_r50.yaml, which is
built into a MaskFormer from the registered backbones, pixel decoders and
transformer decoders. `--model` also accepts the path of a config file.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from torch import nn

from ros_seg.models.backbones import build_backbone
from ros_seg.models.class_metadata import ClassMetadata, class_metadata
from ros_seg.models.mask_former import MaskFormer
from ros_seg.models.model_config import ModelConfig, PixelDecoderConfig
from ros_seg.models.panoptic_segformer import build_panoptic_segformer
from ros_seg.models.pixel_decoders.msdeformattn_pixel_decoder import DeformableEncoder, MSDeformAttnPixelDecoder
from ros_seg.models.pixel_decoders.pem_pixel_decoder import PEMPixelDecoder
from ros_seg.models.pixel_decoders.proscale_pixel_decoder import proscale_pixel_decoder
from ros_seg.models.strict_config import ConfigError
from ros_seg.models.transformer_decoders.masked_transformer_decoder import MaskedTransformerDecoder

ChannelsPerLevel = tuple[int, int, int, int]


def _pem(in_channels: ChannelsPerLevel, pd: PixelDecoderConfig) -> nn.Module:
    return PEMPixelDecoder(in_channels, conv_dim=pd.conv_dim, mask_dim=pd.mask_dim)


def _msdeformattn(in_channels: ChannelsPerLevel, pd: PixelDecoderConfig) -> nn.Module:
    encoder = DeformableEncoder(pd.conv_dim, 3, pd.encoder_layers, pd.num_heads, pd.num_points, pd.ffn_dim)
    return MSDeformAttnPixelDecoder(in_channels, pd.conv_dim, pd.mask_dim, encoder)


def _proscale(in_channels: ChannelsPerLevel, pd: PixelDecoderConfig) -> nn.Module:
    return proscale_pixel_decoder(
        in_channels, pd.conv_dim, pd.mask_dim, tuple(pd.proscale_layers), pd.num_heads, pd.num_points, pd.ffn_dim,
        light_pixel_embedding=pd.lpe, token_recalibration=pd.trc,
    )


# Builders from res2..res5 channels and the config section.
PIXEL_DECODERS: dict[str, Callable[[ChannelsPerLevel, PixelDecoderConfig], nn.Module]] = {
    "pem": _pem,
    "msdeformattn": _msdeformattn,
    "proscale": _proscale,
}
TRANSFORMER_DECODERS: dict[str, Callable[..., nn.Module]] = {"masked": MaskedTransformerDecoder}


# The model configs ship inside the package (package data of the wheel, installed with the
# Python sources by colcon), so every way of installing ros_seg knows the same names.
PACKAGE_CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "models"


def config_dirs() -> list[Path]:
    """Where named model configs are looked up, in order: $ROS_SEG_CONFIG_DIR, then the package's own."""
    dirs = []
    if os.environ.get("ROS_SEG_CONFIG_DIR"):
        dirs.append(Path(os.environ["ROS_SEG_CONFIG_DIR"]))
    dirs.append(PACKAGE_CONFIG_DIR)
    return dirs


def model_names() -> list[str]:
    """Every model name with a config file in the config directories."""
    names = set()
    for d in config_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def resolve_config(model: str) -> Path:
    """Config file of a model name or path; ConfigError listing the known names otherwise."""
    if model.endswith((".yaml", ".yml")) or os.sep in model:
        path = Path(model)
        if not path.is_file():
            raise ConfigError(f"model config file {path} does not exist")
        return path
    for d in config_dirs():
        path = d / f"{model}.yaml"
        if path.is_file():
            return path
    raise ConfigError(f"unknown model {model!r}: choose one of {model_names()} or give a config file path")


def load_model_config(model: str) -> ModelConfig:
    """ModelConfig of a model name or config path."""
    return ModelConfig.from_yaml(resolve_config(model))


def build_model(config: ModelConfig) -> tuple[nn.Module, ClassMetadata]:
    """A freshly initialized model (a MaskFormer, or a PanopticSegFormer by meta_architecture) and its label set."""
    metadata = class_metadata(config.dataset)
    backbone = build_backbone(config.backbone.name)
    if config.meta_architecture == "panoptic_segformer":
        return build_panoptic_segformer(config, metadata, backbone), metadata
    in_channels = tuple(backbone.out_channels[k] for k in ("res2", "res3", "res4", "res5"))
    pd = config.pixel_decoder
    if pd.name not in PIXEL_DECODERS:
        raise ConfigError(f"unknown pixel_decoder.name {pd.name!r}: choose one of {sorted(PIXEL_DECODERS)}")
    pixel_decoder = PIXEL_DECODERS[pd.name](in_channels, pd)
    td = config.transformer_decoder
    if td.name not in TRANSFORMER_DECODERS:
        raise ConfigError(
            f"unknown transformer_decoder.name {td.name!r}: choose one of {sorted(TRANSFORMER_DECODERS)}"
        )
    transformer_decoder = TRANSFORMER_DECODERS[td.name](
        in_channels=pd.conv_dim,
        num_classes=metadata.num_classes,
        hidden_dim=td.hidden_dim,
        num_queries=td.num_queries,
        num_heads=td.num_heads,
        dim_feedforward=td.dim_feedforward,
        num_layers=td.num_layers,
        pre_norm=td.pre_norm,
        mask_dim=pd.mask_dim,
        cross_attention=td.cross_attention,
    )
    model = MaskFormer(
        backbone,
        pixel_decoder,
        transformer_decoder,
        pixel_mean=config.input.pixel_mean,
        pixel_std=config.input.pixel_std,
        size_divisibility=config.input.size_divisibility,
    )
    return model, metadata
