"""Build a PanopticSegFormer from a model config (meta_architecture "panoptic_segformer")."""
from __future__ import annotations

from torch import nn

from ros_seg.models.class_metadata import ClassMetadata
from ros_seg.models.model_config import ModelConfig
from ros_seg.models.panoptic_segformer.channel_mapper import MAPPED_LEVELS
from ros_seg.models.panoptic_segformer.panoptic_segformer import PanopticSegFormer


def build_panoptic_segformer(config: ModelConfig, metadata: ClassMetadata, backbone: nn.Module) -> PanopticSegFormer:
    """A freshly initialized PanopticSegFormer on `backbone` for the classes of `metadata`."""
    ps = config.panoptic_segformer
    return PanopticSegFormer(
        backbone,
        tuple(backbone.out_channels[name] for name in MAPPED_LEVELS),
        metadata.is_thing,
        pixel_mean=config.input.pixel_mean,
        pixel_std=config.input.pixel_std,
        num_thing_queries=ps.num_thing_queries,
        dim=ps.hidden_dim,
        num_heads=ps.num_heads,
        num_points=ps.num_points,
        encoder_layers=ps.encoder_layers,
        location_layers=ps.location_layers,
        thing_mask_layers=ps.thing_mask_layers,
        stuff_mask_layers=ps.stuff_mask_layers,
        ffn_dim=ps.ffn_dim,
        size_divisibility=config.input.size_divisibility,
        max_detections=ps.max_detections,
    )
