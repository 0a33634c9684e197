"""Model families (meta-architectures): what differs between MaskFormer-like models and Panoptic SegFormer.

A family object answers every question whose answer depends on the kind of
model, so no consumer branches on `config.meta_architecture`: the registry
builds models with it, training takes its criterion, the Segmenter and
training's validation turn logits into label maps with its post-processing, and
the ONNX export asks it whether a model traces for any input size. Get one with
`ros_seg.models.families.model_family(config)`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ros_seg.models.class_metadata import ClassMetadata
from ros_seg.models.model_config import ModelConfig
from ros_seg.models.postprocess.label_maps import SEMANTIC_RULES, PanopticOutput


@dataclass(frozen=True)
class PostprocessOptions:
    """Thresholds of the panoptic merge, chosen per call (the model config holds their defaults).

    score_threshold: least score of a kept segment (MaskFormer: class probability;
        Panoptic SegFormer: class score x mask quality^2).
    overlap_threshold: least share of its own mask a segment must still own after the merge.
    semantic_rule: MaskFormer semantic maps: "authors" (mask logits resized to the output, then
        sigmoid: Mask2Former's and PEM's rule, which scores are reported with) or "fast" (class
        scores formed at mask resolution, then resized); see ros_seg.models.postprocess.label_maps.
    """

    score_threshold: float
    overlap_threshold: float
    semantic_rule: str = "authors"

    def __post_init__(self) -> None:
        if self.semantic_rule not in SEMANTIC_RULES:
            raise ValueError(f"semantic_rule must be one of {SEMANTIC_RULES}, got {self.semantic_rule!r}")


class MetaArchitecture(ABC):
    """A model family bound to one model config and its label set.

    Args:
        config: the model config; `config.meta_architecture` names this family.
        metadata: the label set the model predicts.
    """

    def __init__(self, config: ModelConfig, metadata: ClassMetadata) -> None:
        self.config = config
        self.metadata = metadata

    @abstractmethod
    def build(self) -> nn.Module:
        """A freshly initialized model: (B, 3, H, W) RGB 0..255 in, {"pred_logits", "pred_masks", ...} out."""

    @abstractmethod
    def criterion(self, loss: Any) -> nn.Module:
        """The training loss, weighted by `loss` (a training config's loss section, LossConfig) where the
        family uses those weights."""

    @abstractmethod
    def postprocess(
        self,
        class_logits: torch.Tensor,
        mask_logits: torch.Tensor,
        valid_size: tuple[int, int],
        padded_size: tuple[int, int],
        out_size: tuple[int, int],
        options: PostprocessOptions,
        panoptic: bool = True,
    ) -> tuple[torch.Tensor, PanopticOutput | None]:
        """One image's (Q, K+1 or K) class logits and (Q, h, w) mask logits -> label maps at `out_size`.

        The logits cover an input of `padded_size`, of which the image is the top-left
        `valid_size`. Returns the semantic map (H, W) of class ids and, when `panoptic`
        is asked for or comes at no extra cost, the panoptic segments (else None).
        """

    @property
    def exports_any_input_size(self) -> bool:
        """Whether an ONNX export traced at one size runs at every size (else it is fixed to that size)."""
        return False

    def default_options(self) -> PostprocessOptions:
        """The post-processing thresholds of the model config."""
        inference = self.config.inference
        return PostprocessOptions(inference.score_threshold, inference.overlap_threshold)

    def prepare(self, device: torch.device) -> None:
        """Compile or load what post-processing on `device` needs, so a first image does not wait for it
        (nothing, unless the family says otherwise)."""
        return None
