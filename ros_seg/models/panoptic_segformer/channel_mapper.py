"""Channel mapper of Panoptic SegFormer (Deformable DETR's input projection, MMDetection's ChannelMapper).

res3, res4, res5 (1/8, 1/16, 1/32) are each projected to the model width by a
1x1 convolution without bias and GroupNorm(32); one extra level at 1/64 comes
from a 3x3 stride-2 convolution (no bias) + GroupNorm of raw res5.
"""
from __future__ import annotations

from torch import Tensor, nn

MAPPED_LEVELS = ("res3", "res4", "res5")
"""Backbone levels the mapper projects, fine first (1/8, 1/16, 1/32)."""


def _conv_group_norm(in_channels: int, out_channels: int, kernel_size: int, stride: int) -> nn.Sequential:
    """Conv2d (no bias, Xavier-uniform) + GroupNorm(32); padding keeps the size at stride 1."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False)
    nn.init.xavier_uniform_(conv.weight)
    return nn.Sequential(conv, nn.GroupNorm(32, out_channels))


class ChannelMapper(nn.Module):
    """res3..res5 -> four maps of `out_channels` at 1/8, 1/16, 1/32, 1/64.

    Args:
        in_channels: channels of res3, res4, res5.
        out_channels: model width.
    """

    def __init__(self, in_channels: tuple[int, int, int], out_channels: int = 256) -> None:
        super().__init__()
        if len(in_channels) != len(MAPPED_LEVELS):
            raise ValueError(f"ChannelMapper needs the channels of {MAPPED_LEVELS}, got {in_channels}")
        self.projections = nn.ModuleList(_conv_group_norm(c, out_channels, 1, 1) for c in in_channels)
        self.extra = _conv_group_norm(in_channels[-1], out_channels, 3, 2)

    def forward(self, features: dict[str, Tensor]) -> list[Tensor]:
        """Backbone features -> [(B, C, H/8, W/8), (B, C, H/16, W/16), (B, C, H/32, W/32), (B, C, H/64, W/64)]."""
        maps = [proj(features[name]) for proj, name in zip(self.projections, MAPPED_LEVELS)]
        maps.append(self.extra(features[MAPPED_LEVELS[-1]]))
        return maps
