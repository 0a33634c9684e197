"""MaskFormer meta-architecture: backbone -> pixel decoder -> transformer decoder.

The model takes RGB images with values 0..255 of any size; it normalizes them,
pads bottom/right with zeros (after normalization) to a multiple of
`size_divisibility`, and returns class logits and mask logits at 1/4 of the
padded size. Post-processing lives in ros_seg.models.postprocess.label_maps.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ros_seg.models.size_divisibility import padded_size


class MaskFormer(nn.Module):
    """Universal segmentation model in the MaskFormer family (PEM, Mask2Former).

    Args:
        backbone: image -> dict of feature maps res2..res5.
        pixel_decoder: backbone features -> (mask features, multi-scale features).
        transformer_decoder: (multi-scale features, mask features) -> predictions.
        pixel_mean: RGB mean subtracted from the 0..255 input.
        pixel_std: RGB std dividing the input.
        size_divisibility: input padded to a multiple of this.
    """

    def __init__(
        self,
        backbone: nn.Module,
        pixel_decoder: nn.Module,
        transformer_decoder: nn.Module,
        pixel_mean: list[float],
        pixel_std: list[float],
        size_divisibility: int = 32,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.pixel_decoder = pixel_decoder
        self.transformer_decoder = transformer_decoder
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1), persistent=False)
        self.size_divisibility = size_divisibility

    def normalize_and_pad(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) 0..255 -> normalized (B, 3, H', W') with H', W' multiples of size_divisibility."""
        x = (images.to(self.pixel_mean.dtype) - self.pixel_mean) / self.pixel_std
        height, width = padded_size(x.shape[-2:], self.size_divisibility)
        pad_h, pad_w = height - x.shape[-2], width - x.shape[-1]
        return F.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x

    def forward(self, images: torch.Tensor, all_predictions: bool | None = None) -> dict:
        """images (B, 3, H, W) RGB 0..255 -> {"pred_logits": (B, Q, K+1), "pred_masks": (B, Q, H'/4, W'/4),
        "aux_outputs": earlier predictions (training, or when all_predictions)}."""
        x = self.normalize_and_pad(images)
        features = self.backbone(x)
        mask_features, multi_scale = self.pixel_decoder(features)
        return self.transformer_decoder(multi_scale, mask_features, all_predictions)
