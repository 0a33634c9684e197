"""Deformable-DETR encoder that hands on the flat token sequence the decoders attend to.

The same layers and level embedding as Mask2Former's :class:`DeformableEncoder`
(post-norm, ReLU FFN), with MMDetection's sine position encoding (positions
shifted by -0.5, as the authors' configuration sets it), and its output stays
flattened (tokens with their positions, shapes and level starts) instead of
being reshaped back to maps.
"""
from __future__ import annotations

from torch import Tensor

from ros_seg.models.pixel_decoders.msdeformattn_pixel_decoder import (
    DeformableEncoder,
    FlatLevels,
    flatten_levels,
    run_layers,
)
from ros_seg.models.position_encoding import SinePositionEncoding

POSITION_OFFSET = -0.5
"""MMDetection's SinePositionalEncoding offset in the authors' configuration."""


class TokenEncoder(DeformableEncoder):
    """Maps (B, C, H_l, W_l), in level order -> FlatLevels whose tokens (B, S, C) are the refined ones.

    Args:
        embed_dim: model width C.
        num_levels: feature levels.
        num_layers: encoder layers.
        num_heads: attention heads.
        num_points: sampling points per head and level.
        ffn_dim: FFN hidden width.
    """

    def __init__(
        self,
        embed_dim: int = 256,
        num_levels: int = 4,
        num_layers: int = 6,
        num_heads: int = 8,
        num_points: int = 4,
        ffn_dim: int = 1024,
    ) -> None:
        super().__init__(embed_dim, num_levels, num_layers, num_heads, num_points, ffn_dim)
        self.position_encoding = SinePositionEncoding(embed_dim // 2, offset=POSITION_OFFSET)

    def forward(self, maps: list[Tensor]) -> FlatLevels:
        flat = flatten_levels(maps, self.level_embed, self.position_encoding)
        return flat._replace(tokens=run_layers(self.layers, flat))
