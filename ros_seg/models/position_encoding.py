"""Sine positional encoding of a 2-D feature map (DETR, Carion et al., ECCV 2020).

Normalized variant used by Mask2Former and PEM: positions 1..H and 1..W are
divided by H and W and scaled to [0, 2*pi]; each axis gets `num_feats` channels
alternating sin and cos at geometrically spaced frequencies; y channels first.
MMDetection's variant (Deformable DETR, Panoptic SegFormer) shifts the positions
by an `offset` (-0.5: pixel centres) before dividing.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class SinePositionEncoding(nn.Module):
    """Positional encoding of shape (1, 2*num_feats, H, W) for an (B, C, H, W) map.

    Args:
        num_feats: channels per axis (half of the model width).
        temperature: base of the frequency progression.
        offset: added to the positions 1..H and 1..W before normalizing (MMDetection's -0.5).
    """

    def __init__(self, num_feats: int = 128, temperature: float = 10000.0, offset: float = 0.0) -> None:
        super().__init__()
        self.num_feats = num_feats
        self.temperature = temperature
        self.offset = offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        device = x.device
        eps = 1e-6
        y = (torch.arange(1, height + 1, dtype=torch.float32, device=device) + self.offset) / (height + eps)
        xs = (torch.arange(1, width + 1, dtype=torch.float32, device=device) + self.offset) / (width + eps)
        y, xs = y * (2 * math.pi), xs * (2 * math.pi)
        idx = torch.arange(self.num_feats, dtype=torch.float32, device=device)
        freq = self.temperature ** (2 * torch.div(idx, 2, rounding_mode="floor") / self.num_feats)  # (F,)
        pos_y = y[:, None] / freq  # (H, F)
        pos_x = xs[:, None] / freq  # (W, F)
        pos_y = torch.stack((pos_y[:, 0::2].sin(), pos_y[:, 1::2].cos()), dim=2).flatten(1)  # (H, F)
        pos_x = torch.stack((pos_x[:, 0::2].sin(), pos_x[:, 1::2].cos()), dim=2).flatten(1)  # (W, F)
        pos = torch.cat(
            (pos_y[:, None, :].expand(height, width, -1), pos_x[None, :, :].expand(height, width, -1)), dim=2
        )  # (H, W, 2F)
        return pos.permute(2, 0, 1).unsqueeze(0).to(x.dtype)  # (1, 2F, H, W)
