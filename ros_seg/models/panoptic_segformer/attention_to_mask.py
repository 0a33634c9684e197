"""Masks from multi-scale attention maps (Panoptic SegFormer, Sec. 3.4, Eqs. 1-2; the authors' code).

A mask-decoder query's attention logits (before the softmax) over the tokens of
the 1/8, 1/16 and 1/32 levels are split by level; on each level a per-pixel
Linear(M, M) + ReLU mixes the M heads' logits; the 1/16 and 1/32 maps are
upsampled bilinearly to 1/8; the three are concatenated (3 * M channels,
level-major) and a Linear(3 * M, 1) + ReLU gives the mask. Masks are therefore
non-negative scores, thresholded at 0.5 without a sigmoid.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class AttentionToMask(nn.Module):
    """(B, M, Q, S) attention logits over `num_levels` levels -> (B, Q, H_0, W_0) non-negative masks.

    Args:
        num_heads: attention heads M.
        num_levels: levels the tokens span, finest first; masks come out at the finest.
    """

    def __init__(self, num_heads: int, num_levels: int = 3) -> None:
        super().__init__()
        self.level_mix = nn.ModuleList(nn.Linear(num_heads, num_heads) for _ in range(num_levels))
        self.fuse = nn.Linear(num_levels * num_heads, 1)
        self.num_heads = num_heads
        self.num_levels = num_levels

    def forward(self, logits: Tensor, spatial_shapes: list[tuple[int, int]]) -> Tensor:
        """logits (B, M, Q, S) with S = sum of H_l * W_l; spatial_shapes [(H, W)] per level, finest first."""
        batch, heads, queries, _ = logits.shape
        if len(spatial_shapes) != self.num_levels or heads != self.num_heads:
            raise ValueError(
                f"AttentionToMask built for {self.num_levels} levels and {self.num_heads} heads got "
                f"{len(spatial_shapes)} levels and {heads} heads"
            )
        per_pixel = logits.permute(0, 2, 3, 1)  # (B, Q, S, M)
        size = spatial_shapes[0]
        chunks = per_pixel.split([h * w for h, w in spatial_shapes], dim=2)
        levels = []
        for mix, chunk, (height, width) in zip(self.level_mix, chunks, spatial_shapes):
            mixed = torch.relu(mix(chunk))  # (B, Q, h*w, M)
            if (height, width) != size:
                maps = mixed.permute(0, 1, 3, 2).reshape(batch * queries, heads, height, width)
                maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
                mixed = maps.reshape(batch, queries, heads, size[0] * size[1]).permute(0, 1, 3, 2)
            levels.append(mixed)
        mask = torch.relu(self.fuse(torch.cat(levels, dim=-1)))  # (B, Q, H_0*W_0, 1)
        return mask.view(batch, queries, *size)
