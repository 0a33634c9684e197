"""Multi-scale deformable attention layer (Zhu et al., "Deformable DETR", ICLR 2021).

Each query predicts, per head, level and point, a sampling offset around its
reference point and an attention weight (softmax over the level's and point's
L * P samples of the head); the values, projected and split into heads, are
sampled there by :func:`ros_seg.ops.ms_deform_attn` and the heads' sums are
projected back to the model width.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ros_seg.ops import ms_deform_attn


class MSDeformAttn(nn.Module):
    """Deformable attention of queries over the flattened tokens of `num_levels` feature levels.

    Args:
        embed_dim: model width C; divisible by `num_heads`.
        num_levels: feature levels L the layer samples.
        num_heads: attention heads M.
        num_points: sampling points P per head and level.
    """

    def __init__(self, embed_dim: int = 256, num_levels: int = 4, num_heads: int = 8, num_points: int = 4) -> None:
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"MSDeformAttn: embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        self.embed_dim = embed_dim
        self.num_levels = num_levels
        self.num_heads = num_heads
        self.num_points = num_points
        self.sampling_offsets = nn.Linear(embed_dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dim, embed_dim)
        self.output_proj = nn.Linear(embed_dim, embed_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable DETR's initialization.

        Offsets start as a fixed pattern: head m points along angle 2*pi*m/M (the
        direction scaled so its larger coordinate is 1), point p at p + 1 pixels of
        that direction, the same on every level. Attention starts uniform; the value
        and output projections are Xavier-uniform with zero bias.
        """
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.num_heads, dtype=torch.float32) * (2 * math.pi / self.num_heads)
        directions = torch.stack((angles.cos(), angles.sin()), dim=-1)  # (M, 2) as (x, y)
        directions = directions / directions.abs().max(dim=-1, keepdim=True).values
        steps = torch.arange(1, self.num_points + 1, dtype=torch.float32).view(1, 1, self.num_points, 1)
        pattern = directions.view(self.num_heads, 1, 1, 2) * steps  # (M, 1, P, 2)
        pattern = pattern.expand(-1, self.num_levels, -1, -1)  # (M, L, P, 2)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(pattern.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for projection in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(projection.weight)
            nn.init.zeros_(projection.bias)

    def forward(
        self,
        query: Tensor,
        reference_points: Tensor,
        input_flatten: Tensor,
        spatial_shapes: Tensor,
        level_start_index: Tensor,
        padding_mask: Tensor | None = None,
    ) -> Tensor:
        """Attend from the queries to the multi-scale tokens.

        Args:
            query: ``(N, Lq, C)``, position embedding already added.
            reference_points: ``(N, Lq, L, 2)`` normalized (x, y) per level, or ``(N, Lq, L, 4)``
                boxes (cx, cy, w, h) whose offsets scale with half the box size over P.
            input_flatten: ``(N, S, C)``, the levels' tokens concatenated.
            spatial_shapes: ``(L, 2)`` integer (H, W) per level (CPU or the input's device).
            level_start_index: ``(L,)`` start of each level in S.
            padding_mask: ``(N, S)`` bool, True at padding tokens (they contribute zero), or None.

        Returns:
            ``(N, Lq, C)``.
        """
        n, queries, _ = query.shape
        heads, levels, points = self.num_heads, self.num_levels, self.num_points
        if spatial_shapes.shape[0] != levels or reference_points.shape[2] != levels:
            raise ValueError(
                f"MSDeformAttn built for {levels} levels got spatial_shapes {tuple(spatial_shapes.shape)} and "
                f"reference_points {tuple(reference_points.shape)}"
            )
        value = self.value_proj(input_flatten)  # (N, S, C)
        if padding_mask is not None:
            value = value.masked_fill(padding_mask[..., None], 0.0)
        value = value.view(n, value.shape[1], heads, self.embed_dim // heads)  # (N, S, M, D)
        # Locations are at least float32, also under autocast (Deformable-DETR runs this op in float32): in bf16
        # a location on a 256-pixel-wide level would move by up to a pixel.
        position_dtype = torch.promote_types(value.dtype, torch.float32)
        offsets = self.sampling_offsets(query).view(n, queries, heads, levels, points, 2).to(position_dtype)
        weights = self.attention_weights(query).view(n, queries, heads, levels * points).softmax(-1)
        weights = weights.view(n, queries, heads, levels, points)
        if reference_points.shape[-1] == 2:
            # Offsets are in pixels of each level: divide by (W, H).
            normalizer = spatial_shapes.flip(-1).to(device=query.device, dtype=offsets.dtype)  # (L, 2)
            locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[:, None, :]
        elif reference_points.shape[-1] == 4:
            centres = reference_points[:, :, None, :, None, :2]  # (N, Lq, 1, L, 1, 2)
            half_sizes = reference_points[:, :, None, :, None, 2:] * 0.5
            locations = centres + offsets / points * half_sizes
        else:
            raise ValueError(
                "MSDeformAttn: reference_points must end in 2 (points) or 4 (boxes), "
                f"got shape {tuple(reference_points.shape)}"
            )
        output = ms_deform_attn(
            value, spatial_shapes, level_start_index, locations.to(position_dtype), weights.to(value.dtype)
        )  # (N, Lq, C)
        return self.output_proj(output)
