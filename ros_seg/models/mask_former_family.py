"""The MaskFormer family (PEM, Mask2Former, PRO-SCALE): one backbone, a registered pixel decoder and
transformer decoder, the set criterion of Mask2Former and MaskFormer's semantic and panoptic merging."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ros_seg.models.backbones import build_backbone
from ros_seg.models.criteria.criterion import SetCriterion
from ros_seg.models.criteria.matcher import HungarianMatcher
from ros_seg.models.mask_former import MaskFormer
from ros_seg.models.meta_architecture import MetaArchitecture, PostprocessOptions
from ros_seg.models.model_config import PixelDecoderConfig
from ros_seg.models.pixel_decoders.msdeformattn_pixel_decoder import DeformableEncoder, MSDeformAttnPixelDecoder
from ros_seg.models.pixel_decoders.pem_pixel_decoder import PEMPixelDecoder
from ros_seg.models.pixel_decoders.proscale_pixel_decoder import proscale_pixel_decoder
from ros_seg.models.postprocess.label_maps import PanopticOutput, panoptic_inference, prepare, semantic_inference
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
# Pixel decoders without deformable attention: their ONNX graphs hold no shapes fixed at tracing.
ANY_SIZE_PIXEL_DECODERS = ("pem",)


class MaskFormerFamily(MetaArchitecture):
    """meta_architecture "mask_former": MaskFormer models, their criterion and merging."""

    def build(self) -> MaskFormer:
        config = self.config
        backbone = build_backbone(config.backbone.name)
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
            num_classes=self.metadata.num_classes,
            hidden_dim=td.hidden_dim,
            num_queries=td.num_queries,
            num_heads=td.num_heads,
            dim_feedforward=td.dim_feedforward,
            num_layers=td.num_layers,
            pre_norm=td.pre_norm,
            mask_dim=pd.mask_dim,
            cross_attention=td.cross_attention,
        )
        return MaskFormer(
            backbone,
            pixel_decoder,
            transformer_decoder,
            pixel_mean=config.input.pixel_mean,
            pixel_std=config.input.pixel_std,
            size_divisibility=config.input.size_divisibility,
        )

    def criterion(self, loss: Any) -> SetCriterion:
        return SetCriterion(
            self.metadata.num_classes,
            HungarianMatcher(loss.class_weight, loss.mask_weight, loss.dice_weight, loss.num_points),
            class_weight=loss.class_weight,
            mask_weight=loss.mask_weight,
            dice_weight=loss.dice_weight,
            no_object_weight=loss.no_object_weight,
            num_points=loss.num_points,
            oversample_ratio=loss.oversample_ratio,
            importance_sample_ratio=loss.importance_sample_ratio,
        )

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
        semantic = semantic_inference(
            class_logits, mask_logits, valid_size, padded_size, out_size, options.semantic_rule
        )
        if not panoptic:
            return semantic, None
        segments = panoptic_inference(
            class_logits, mask_logits, self.metadata, valid_size, padded_size, out_size,
            options.score_threshold, options.overlap_threshold,
        )
        return semantic, segments

    @property
    def exports_any_input_size(self) -> bool:
        return self.config.pixel_decoder.name in ANY_SIZE_PIXEL_DECODERS

    def prepare(self, device: torch.device) -> None:
        prepare(device)
