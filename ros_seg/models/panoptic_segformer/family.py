"""The Panoptic SegFormer family: its model, its own losses (the training config's loss weights are not
used) and mask-wise merging."""
from __future__ import annotations

from typing import Any

import torch

from ros_seg.models.backbones import build_backbone
from ros_seg.models.criteria.panoptic_segformer_criterion import PanopticSegFormerCriterion
from ros_seg.models.criteria.panoptic_segformer_matcher import ThingMatcher
from ros_seg.models.meta_architecture import MetaArchitecture, PostprocessOptions
from ros_seg.models.panoptic_segformer.builder import build_panoptic_segformer
from ros_seg.models.panoptic_segformer.panoptic_segformer import PanopticSegFormer
from ros_seg.models.postprocess.label_maps import PanopticOutput
from ros_seg.models.postprocess.maskwise_merge import maskwise_merge


class PanopticSegFormerFamily(MetaArchitecture):
    """meta_architecture "panoptic_segformer"."""

    def build(self) -> PanopticSegFormer:
        return build_panoptic_segformer(self.config, self.metadata, build_backbone(self.config.backbone.name))

    def criterion(self, loss: Any) -> PanopticSegFormerCriterion:
        """The authors' losses at the authors' weights; `loss` is not used."""
        return PanopticSegFormerCriterion(self.metadata.is_thing, ThingMatcher())

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
        """Mask-wise merging gives both maps in one pass, so the panoptic segments always come back.
        `mask_logits` are the model's non-negative mask scores (no sigmoid); `options.overlap_threshold`
        applies to things, the config's stuff_overlap_threshold to stuff."""
        ps = self.config.panoptic_segformer
        return maskwise_merge(
            class_logits, mask_logits, self.metadata, valid_size, padded_size, out_size,
            options.score_threshold, options.overlap_threshold, ps.mask_threshold, ps.stuff_overlap_threshold,
        )
