"""Masks from multi-scale attention maps (Panoptic SegFormer, Sec. 3.4, Eqs. 1-2).

A mask-decoder query's attention logits over the tokens of the 1/8, 1/16 and
1/32 levels are split by level and reshaped to maps (M heads each), upsampled
bilinearly to 1/8, concatenated (3 * M channels) and fused by a 1x1
convolution into one mask logit per pixel.

The 1x1 convolution and bilinear upsampling are both linear, so they commute:
each level's M head maps are first weighted by that level's slice of the
convolution and summed, and only that one map is upsampled. The result equals
the paper's upsample-concatenate-convolve order while upsampling Q maps per
level instead of Q * M (an M-fold saving in memory at high resolution).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class AttentionToMask(nn.Module):
    """(B, M, Q, S) attention logits over `num_levels` levels -> (B, Q, H_0, W_0) mask logits.

    Args:
        num_heads: attention heads M.
        num_levels: levels the tokens span, finest first; masks come out at the finest.
    """

    def __init__(self, num_heads: int, num_levels: int = 3) -> None:
        super().__init__()
        self.fuse = nn.Conv2d(num_levels * num_heads, 1, kernel_size=1)  # input channels level-major
        self.num_heads = num_heads
        self.num_levels = num_levels

    def forward(self, logits: Tensor, spatial_shapes: Tensor) -> Tensor:
        """logits (B, M, Q, S) with S = sum of H_l * W_l; spatial_shapes (L, 2) (H, W), finest first."""
        batch, heads, queries, _ = logits.shape
        shapes = [tuple(s) for s in spatial_shapes.tolist()]
        if len(shapes) != self.num_levels or heads != self.num_heads:
            raise ValueError(
                f"AttentionToMask built for {self.num_levels} levels and {self.num_heads} heads got "
                f"{len(shapes)} levels and {heads} heads"
            )
        weights = self.fuse.weight.view(self.num_levels, self.num_heads).to(logits.dtype)  # (L, M)
        size = shapes[0]
        mask = None
        for level, (chunk, (height, width)) in enumerate(zip(logits.split([h * w for h, w in shapes], -1), shapes)):
            level_map = torch.einsum("bmqs,m->bqs", chunk, weights[level]).view(batch, queries, height, width)
            if (height, width) != size:
                level_map = F.interpolate(level_map, size=size, mode="bilinear", align_corners=False)
            mask = level_map if mask is None else mask + level_map
        return mask + self.fuse.bias.to(logits.dtype)  # (B, Q, H_0, W_0)
