"""Panoptic SegFormer: meta-architecture, its parts and its builder from a model config."""
from __future__ import annotations

from ros_seg.models.panoptic_segformer.builder import build_panoptic_segformer
from ros_seg.models.panoptic_segformer.panoptic_segformer import PanopticSegFormer

__all__ = ["PanopticSegFormer", "build_panoptic_segformer"]
