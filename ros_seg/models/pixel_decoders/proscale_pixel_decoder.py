"""PRO-SCALE encoder for Mask2Former (Aich et al., "Progressive Token Length Scaling in
Transformer Encoders for Efficient Universal Segmentation", ICLR 2025).

Mask2Former's encoder keeps all 1/32, 1/16 and 1/8 tokens in every layer.
PRO-SCALE orders the tokens coarse to fine (s4 = 1/32, s3 = 1/16, s2 = 1/8) and
grows the sequence in three stages (Eq. 1-3): stage 1 runs p1 layers on s4
alone, stage 2 p2 layers on [stage-1 output, s3], stage 3 p3 layers on
[stage-2 output, s2]. Each stage's tokens are a prefix of the full sequence,
so its reference points, spatial shapes, level starts and positions are the
full ones sliced to its levels, and its layers' sampling-offset and
attention-weight projections are sized for its number of levels.

Token re-calibration (TRC, appendix C, Eq. 4): before stage 1 the raw s4
tokens, and before stage 2 the raw s3 tokens (what stage 2 concatenates), are
re-weighted by sigmoid(0.1 * phi(s2 resized to their level)), phi one shared
Linear(C -> 1); so s2 informs the stages that do not see it. The resize follows
the authors' code, not the paper (see TokenRecalibration).

Light pixel embedding (LPE, Sec. 3.1.1): in the FPN step at 1/4 the 3x3
output conv becomes maxpool(3, stride 1, pad 1) + GroupNorm + ReLU. The lateral
1x1 projection of res2 and the 1x1 mask-feature conv remain: with them the
encoder counts match the paper's 145 (3,3,3) and 65.21 (1,1,1) GFLOPs on
Cityscapes with R50, without them they would fall about 17 short.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ros_seg.models.bilinear_resize import resize_bilinear
from ros_seg.models.pixel_decoders.msdeformattn_pixel_decoder import (
    ENCODER_LEVELS,
    DeformableEncoderLayer,
    MSDeformAttnPixelDecoder,
    flatten_levels,
    run_layers,
    unflatten_levels,
)
from ros_seg.models.position_encoding import SinePositionEncoding


class TokenRecalibration(nn.Module):
    """TRC as the authors' code computes it, which the published weights were trained with.

    The paper gates every token of a coarse map x by sigmoid(epsilon * phi(guide resized to x)),
    phi a Linear(C -> 1) on the guide's token at the same place. The authors' code resizes the
    guide's (B, L, C) token tensor reinterpreted in memory as a (B, C, H, W) map
    (`.view(-1, C, H, W)`, not a transpose) and reinterprets the result back as (B, l, C)
    (`.reshape(B, l, C)`), so the "token" phi sees mixes positions and channels. We do the same:
    with the paper's per-token gate, published PRO-SCALE weights give masks off by up to 0.26;
    with this, 1e-6. The gate, one scalar per token of x, scales all of that token's channels.

    Args:
        embed_dim: token width C.
        temperature: the paper's epsilon (0.1 in the authors' configs).
    """

    def __init__(self, embed_dim: int = 256, temperature: float = 0.1) -> None:
        super().__init__()
        self.phi = nn.Linear(embed_dim, 1)
        self.temperature = temperature

    def forward(self, x: Tensor, guide: Tensor) -> Tensor:
        """x (B, C, h, w), guide (B, C, H, W) -> re-weighted x (B, C, h, w)."""
        batch, channels, height, width = x.shape
        guide_tokens = guide.flatten(2).transpose(1, 2).contiguous()  # (B, H*W, C), the authors' layout
        reinterpreted = guide_tokens.view(batch, channels, *guide.shape[-2:])  # memory read as (B, C, H, W)
        tokens = resize_bilinear(reinterpreted, (height, width)).reshape(batch, height * width, channels)
        gate = torch.sigmoid(self.temperature * self.phi(tokens))  # (B, h*w, 1)
        return x * gate.transpose(1, 2).reshape(batch, 1, height, width)


class ProScaleEncoder(nn.Module):
    """Progressive token-length encoder over maps ordered coarse first.

    Args:
        embed_dim: model width C.
        stage_layers: layers per stage (p1, p2, p3); stage i sees the i coarsest levels.
        num_heads: attention heads.
        num_points: sampling points per head and level.
        ffn_dim: FFN hidden width.
        token_recalibration: apply TRC to the raw tokens of every level but the finest.
    """

    def __init__(
        self,
        embed_dim: int = 256,
        stage_layers: tuple[int, ...] = (3, 3, 3),
        num_heads: int = 8,
        num_points: int = 4,
        ffn_dim: int = 1024,
        token_recalibration: bool = True,
    ) -> None:
        super().__init__()
        if len(stage_layers) < 1 or any(p < 0 for p in stage_layers):
            raise ValueError(f"ProScaleEncoder: stage_layers must be non-negative counts, got {stage_layers}")
        self.stage_layers = tuple(stage_layers)
        self.position_encoding = SinePositionEncoding(embed_dim // 2)
        self.level_embed = nn.Parameter(torch.empty(len(stage_layers), embed_dim))
        nn.init.normal_(self.level_embed)
        self.stages = nn.ModuleList(
            nn.ModuleList(
                DeformableEncoderLayer(embed_dim, levels, num_heads, num_points, ffn_dim) for _ in range(layers)
            )
            for levels, layers in enumerate(stage_layers, start=1)
        )
        self.recalibration = TokenRecalibration(embed_dim) if token_recalibration else None

    def forward(self, maps: list[Tensor]) -> list[Tensor]:
        """Projected maps (B, C, H_l, W_l), coarse first -> refined maps of the same shapes."""
        if len(maps) != len(self.stages):
            raise ValueError(f"ProScaleEncoder has {len(self.stages)} stages, got {len(maps)} maps")
        if self.recalibration is not None:
            finest = maps[-1]
            maps = [self.recalibration(m, finest) for m in maps[:-1]] + [finest]
        flat = flatten_levels(maps, self.level_embed, self.position_encoding)
        tokens = flat.tokens  # (B, S, C): the stages' outputs, then the raw tokens not yet reached
        for levels, layers in enumerate(self.stages, start=1):
            stage = flat.prefix(levels)
            end = stage.tokens.shape[1]
            refined = run_layers(layers, stage._replace(tokens=tokens[:, :end]))  # (B, S_i, C)
            tokens = torch.cat((refined, tokens[:, end:]), dim=1)
        return unflatten_levels(tokens, flat.spatial_shapes)


class LightPixelEmbedding(nn.Sequential):
    """LPE: parameter-light replacement of the 3x3 FPN output conv: maxpool 3x3 stride 1, GroupNorm(32), ReLU.

    Args:
        channels: feature width.
    """

    def __init__(self, channels: int) -> None:
        super().__init__(nn.MaxPool2d(3, stride=1, padding=1), nn.GroupNorm(32, channels), nn.ReLU())


def proscale_pixel_decoder(
    in_channels: tuple[int, int, int, int],
    conv_dim: int = 256,
    mask_dim: int = 256,
    stage_layers: tuple[int, ...] = (3, 3, 3),
    num_heads: int = 8,
    num_points: int = 4,
    ffn_dim: int = 1024,
    light_pixel_embedding: bool = True,
    token_recalibration: bool = True,
) -> MSDeformAttnPixelDecoder:
    """Mask2Former's pixel decoder with the PRO-SCALE encoder, optionally LPE and TRC.

    Args:
        in_channels: channels of res2, res3, res4, res5.
        conv_dim: model width (256).
        mask_dim: channels of the mask features (256).
        stage_layers: (p1, p2, p3) encoder layers per stage.
        num_heads: attention heads.
        num_points: sampling points per head and level.
        ffn_dim: FFN hidden width.
        light_pixel_embedding: LPE in place of the 3x3 FPN output conv.
        token_recalibration: TRC on the s4 and s3 tokens.
    """
    if len(stage_layers) != len(ENCODER_LEVELS):
        raise ValueError(f"PRO-SCALE needs one layer count per level {ENCODER_LEVELS}, got {stage_layers}")
    encoder = ProScaleEncoder(conv_dim, stage_layers, num_heads, num_points, ffn_dim, token_recalibration)
    output_conv = LightPixelEmbedding(conv_dim) if light_pixel_embedding else None
    return MSDeformAttnPixelDecoder(in_channels, conv_dim, mask_dim, encoder, output_conv)
