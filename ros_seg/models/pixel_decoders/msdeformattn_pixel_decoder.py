"""Mask2Former's multi-scale deformable-attention pixel decoder (Cheng et al., "Masked-attention
Mask Transformer for Universal Image Segmentation", CVPR 2022).

res3..res5 are projected to a common width (1x1 conv + GroupNorm), flattened
into one token sequence ordered coarse to fine (1/32, 1/16, 1/8) and refined
by a Deformable-DETR encoder: every token attends to 4 points per head on each
level around its own pixel centre. An FPN step then adds a lateral projection
of res2 to the upsampled 1/8 output and smooths it (3x3 conv + GroupNorm +
ReLU); a 1x1 conv makes the 1/4 mask features. The encoder outputs at 1/32,
1/16 and 1/8 feed the transformer decoder.

The whole decoder runs in float32 with autocast disabled, as Mask2Former's
does. Images are padded to a multiple of 32 before the backbone, so every
level is fully valid: no padding mask, valid ratios 1.

The encoder is a swappable part (`encoder`), so PRO-SCALE's progressive
encoder reuses the projections and the FPN step.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from ros_seg.models.bilinear_resize import resize_bilinear
from ros_seg.models.ms_deform_attn_module import MSDeformAttn
from ros_seg.models.position_encoding import SinePositionEncoding

ENCODER_LEVELS = ("res5", "res4", "res3")
"""Backbone levels the encoder refines, coarse first (1/32, 1/16, 1/8)."""


class FlatLevels(NamedTuple):
    """Feature maps flattened into one token sequence, with what deformable attention needs.

    `spatial_shapes` and `level_start_index` live on the CPU (see ros_seg.ops.ms_deform_attn).
    """

    tokens: Tensor  # (B, S, C), levels concatenated in order
    positions: Tensor  # (B, S, C), sine position + level embedding
    reference_points: Tensor  # (B, S, L, 2), each token's pixel centre as normalized (x, y), per level
    spatial_shapes: Tensor  # (L, 2) int64 (H, W)
    level_start_index: Tensor  # (L,) int64

    def prefix(self, levels: int) -> FlatLevels:
        """The first `levels` levels: their tokens, positions, reference points, shapes and starts."""
        end = int(self.spatial_shapes[:levels].prod(1).sum())
        return FlatLevels(
            self.tokens[:, :end],
            self.positions[:, :end],
            self.reference_points[:, :end, :levels],
            self.spatial_shapes[:levels],
            self.level_start_index[:levels],
        )


def flatten_levels(maps: list[Tensor], level_embed: Tensor, position_encoding: nn.Module) -> FlatLevels:
    """Flatten `maps` (B, C, H_l, W_l), in order, into one sequence with positions and reference points.

    Positions are the normalized sine encoding of each map plus its row of `level_embed` (L, C).
    Reference points are pixel centres ((x + 0.5) / W, (y + 0.5) / H); with no padding (valid
    ratios 1) a token's reference point is the same on every level.
    """
    batch = maps[0].shape[0]
    shapes = [tuple(m.shape[-2:]) for m in maps]
    tokens = torch.cat([m.flatten(2).transpose(1, 2) for m in maps], dim=1)  # (B, S, C)
    positions = torch.cat(
        [
            (position_encoding(m) + level_embed[i].view(1, -1, 1, 1)).flatten(2).transpose(1, 2)
            for i, m in enumerate(maps)
        ],
        dim=1,
    )  # (1, S, C)
    centres, spatial_shapes, level_start_index = level_geometry(shapes, tokens.device, tokens.dtype)
    reference_points = centres[None, :, None].expand(batch, -1, len(maps), -1)  # (B, S, L, 2)
    return FlatLevels(tokens, positions.expand(batch, -1, -1), reference_points, spatial_shapes, level_start_index)


def level_geometry(
    shapes: list[tuple[int, int]], device: torch.device, dtype: torch.dtype
) -> tuple[Tensor, Tensor, Tensor]:
    """Of levels of sizes `shapes` (H_l, W_l), flattened in order: every token's pixel centre as
    normalized (x, y) (S, 2) on `device`, and the CPU int64 spatial_shapes (L, 2) and level_start_index (L,)."""
    centres = []
    for height, width in shapes:
        ys = (torch.arange(height, device=device, dtype=dtype) + 0.5) / height
        xs = (torch.arange(width, device=device, dtype=dtype) + 0.5) / width
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        centres.append(torch.stack((grid_x.flatten(), grid_y.flatten()), dim=-1))  # (H*W, 2)
    spatial_shapes = torch.tensor(shapes, dtype=torch.long)
    areas = spatial_shapes.prod(1)
    return torch.cat(centres), spatial_shapes, torch.cat((areas.new_zeros(1), areas.cumsum(0)[:-1]))


def unflatten_levels(tokens: Tensor, spatial_shapes: Tensor) -> list[Tensor]:
    """(B, S, C) -> one (B, C, H_l, W_l) map per level, the inverse of the flattening."""
    shapes = [tuple(s) for s in spatial_shapes.tolist()]
    chunks = tokens.split([h * w for h, w in shapes], dim=1)
    return [c.transpose(1, 2).reshape(c.shape[0], c.shape[2], h, w) for c, (h, w) in zip(chunks, shapes)]


class DeformableEncoderLayer(nn.Module):
    """Deformable self-attention over the token sequence, then an FFN; post-norm, no dropout.

    Args:
        embed_dim: model width C.
        num_levels: levels the tokens span.
        num_heads: attention heads.
        num_points: sampling points per head and level.
        ffn_dim: FFN hidden width.
    """

    def __init__(self, embed_dim: int, num_levels: int, num_heads: int, num_points: int, ffn_dim: int) -> None:
        super().__init__()
        self.self_attn = MSDeformAttn(embed_dim, num_levels, num_heads, num_points)
        self.norm1 = nn.LayerNorm(embed_dim)
        self.linear1 = nn.Linear(embed_dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, embed_dim)
        self.norm2 = nn.LayerNorm(embed_dim)

    def forward(self, flat: FlatLevels) -> Tensor:
        """`flat` -> refined tokens (B, S, C)."""
        x = flat.tokens
        attended = self.self_attn(
            x + flat.positions, flat.reference_points, x, flat.spatial_shapes, flat.level_start_index
        )
        x = self.norm1(x + attended)
        return self.norm2(x + self.linear2(torch.relu(self.linear1(x))))


def run_layers(layers: nn.ModuleList, flat: FlatLevels) -> Tensor:
    """Apply encoder layers in turn to `flat`'s tokens; returns the tokens (B, S, C)."""
    tokens = flat.tokens
    for layer in layers:
        tokens = layer(flat._replace(tokens=tokens))
    return tokens


class DeformableEncoder(nn.Module):
    """Mask2Former's encoder: `num_layers` deformable layers over all levels' tokens.

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
        num_levels: int = 3,
        num_layers: int = 6,
        num_heads: int = 8,
        num_points: int = 4,
        ffn_dim: int = 1024,
    ) -> None:
        super().__init__()
        self.position_encoding = SinePositionEncoding(embed_dim // 2)
        self.level_embed = nn.Parameter(torch.empty(num_levels, embed_dim))
        nn.init.normal_(self.level_embed)
        self.layers = nn.ModuleList(
            DeformableEncoderLayer(embed_dim, num_levels, num_heads, num_points, ffn_dim) for _ in range(num_layers)
        )

    def forward(self, maps: list[Tensor]) -> list[Tensor]:
        """Projected maps (B, C, H_l, W_l), coarse first -> refined maps of the same shapes."""
        flat = flatten_levels(maps, self.level_embed, self.position_encoding)
        return unflatten_levels(run_layers(self.layers, flat), flat.spatial_shapes)


def _conv_group_norm(in_channels: int, out_channels: int, kernel_size: int, bias: bool) -> nn.Sequential:
    """Conv2d (padding keeps the size, Kaiming-uniform a=1 init, zero bias) + GroupNorm(32)."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)
    nn.init.kaiming_uniform_(conv.weight, a=1)
    if bias:
        nn.init.zeros_(conv.bias)
    return nn.Sequential(conv, nn.GroupNorm(32, out_channels))


class MSDeformAttnPixelDecoder(nn.Module):
    """Multi-scale features (1/32, 1/16, 1/8) and 1/4 mask features from res2..res5.

    Args:
        in_channels: channels of res2, res3, res4, res5.
        conv_dim: width of the projections, encoder and FPN (256).
        mask_dim: channels of the mask features (256).
        encoder: refines the projected res5, res4, res3 maps (list in, list out, coarse first);
            None builds Mask2Former's 6-layer deformable encoder.
        output_conv: smooths the 1/4 FPN sum; None builds Mask2Former's 3x3 conv + GroupNorm + ReLU.
    """

    def __init__(
        self,
        in_channels: tuple[int, int, int, int],
        conv_dim: int = 256,
        mask_dim: int = 256,
        encoder: nn.Module | None = None,
        output_conv: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if len(in_channels) != 4:
            raise ValueError(f"MSDeformAttnPixelDecoder needs channels of res2..res5, got {in_channels}")
        channels = dict(zip(("res2", "res3", "res4", "res5"), in_channels))
        input_proj = []
        for name in ENCODER_LEVELS:
            projection = _conv_group_norm(channels[name], conv_dim, 1, bias=True)
            nn.init.xavier_uniform_(projection[0].weight)  # Mask2Former initializes these Xavier-uniform
            input_proj.append(projection)
        self.input_proj = nn.ModuleList(input_proj)
        self.encoder = encoder if encoder is not None else DeformableEncoder(conv_dim, len(ENCODER_LEVELS))
        self.lateral_conv = _conv_group_norm(channels["res2"], conv_dim, 1, bias=False)
        self.output_conv = (
            output_conv
            if output_conv is not None
            else nn.Sequential(*_conv_group_norm(conv_dim, conv_dim, 3, bias=False), nn.ReLU())
        )
        self.mask_features = nn.Conv2d(conv_dim, mask_dim, 1)
        nn.init.kaiming_uniform_(self.mask_features.weight, a=1)
        nn.init.zeros_(self.mask_features.bias)
        self.conv_dim = conv_dim
        self.mask_dim = mask_dim

    def forward(self, features: dict[str, Tensor]) -> tuple[Tensor, list[Tensor]]:
        """Returns (mask features (B, mask_dim, H/4, W/4), [x32, x16, x8] each (B, conv_dim, h, w)), float32."""
        device_type = "cuda" if features["res2"].is_cuda else "cpu"
        with torch.autocast(device_type=device_type, enabled=False):
            projected = [proj(features[name].float()) for proj, name in zip(self.input_proj, ENCODER_LEVELS)]
            multi_scale = self.encoder(projected)
            fine = self.lateral_conv(features["res2"].float())  # (B, C, H/4, W/4)
            fine = self.output_conv(fine + resize_bilinear(multi_scale[-1], fine.shape[-2:]))
            return self.mask_features(fine), multi_scale

