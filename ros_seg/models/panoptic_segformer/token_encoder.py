"""Deformable-DETR encoder that hands on the flat token sequence the decoders attend to.

The same layers, level embedding and position encoding as Mask2Former's
:class:`DeformableEncoder` (post-norm, ReLU FFN), but its output stays
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


class TokenEncoder(DeformableEncoder):
    """Maps (B, C, H_l, W_l), in level order -> FlatLevels whose tokens (B, S, C) are the refined ones."""

    def forward(self, maps: list[Tensor]) -> FlatLevels:
        flat = flatten_levels(maps, self.level_embed, self.position_encoding)
        return flat._replace(tokens=run_layers(self.layers, flat))
