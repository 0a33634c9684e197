"""Mask decoder of Panoptic SegFormer: attention layers whose attention maps become masks.

Each layer: optional multi-head self-attention among the queries (the stuff
decoder has it), then plain multi-head cross-attention from the queries to the
encoder tokens of 1/8, 1/16 and 1/32, then a GELU FFN; residual and post-norm
(LayerNorm eps 1e-6) after each, as the authors' code. The cross-attention's
logits (before the softmax) give the layer's mask through
:class:`AttentionToMask`; a linear head on the layer's output queries gives its
class logits (focal-style, no "no object" column). Keys and values are the
encoder tokens without position embedding, as in the authors' code.
"""
from __future__ import annotations

from torch import Tensor, nn

from ros_seg.models.panoptic_segformer.attention_to_mask import AttentionToMask
from ros_seg.models.panoptic_segformer.focal_bias import focal_prior_bias

LAYER_NORM_EPS = 1e-6


class MaskDecoderLayer(nn.Module):
    """[self-attention ->] cross-attention (-> mask) -> FFN.

    Args:
        dim: model width C.
        num_heads: attention heads M.
        ffn_dim: FFN hidden width.
        num_levels: levels of the memory, finest first.
        self_attention: start with self-attention among the queries.
    """

    def __init__(
        self, dim: int, num_heads: int, ffn_dim: int, num_levels: int = 3, self_attention: bool = False
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"MaskDecoderLayer: dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.self_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True) if self_attention else None
        self.norm_self = nn.LayerNorm(dim, eps=LAYER_NORM_EPS) if self_attention else None
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        for projection in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            nn.init.xavier_uniform_(projection.weight)
            nn.init.zeros_(projection.bias)
        self.to_mask = AttentionToMask(num_heads, num_levels)
        self.norm_cross = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Linear(ffn_dim, dim))
        self.norm_ffn = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.num_heads = num_heads

    def forward(
        self, query: Tensor, query_pos: Tensor, memory: Tensor, spatial_shapes: Tensor
    ) -> tuple[Tensor, Tensor]:
        """query, query_pos (B, Q, C); memory (B, S, C) -> (queries (B, Q, C), mask logits (B, Q, H/8, W/8))."""
        if self.self_attn is not None:
            q = query + query_pos
            query = self.norm_self(query + self.self_attn(q, q, query, need_weights=False)[0])
        batch, queries, dim = query.shape
        tokens, heads = memory.shape[1], self.num_heads
        q = self.q_proj(query + query_pos).view(batch, queries, heads, dim // heads).transpose(1, 2)  # (B, M, Q, D)
        k = self.k_proj(memory).view(batch, tokens, heads, dim // heads).transpose(1, 2)  # (B, M, S, D)
        v = self.v_proj(memory).view(batch, tokens, heads, dim // heads).transpose(1, 2)  # (B, M, S, D)
        logits = q @ k.transpose(-1, -2) * (dim // heads) ** -0.5  # (B, M, Q, S)
        mask = self.to_mask(logits, spatial_shapes)
        attended = (logits.softmax(-1) @ v).transpose(1, 2).reshape(batch, queries, dim)  # (B, Q, C)
        query = self.norm_cross(query + self.out_proj(attended))
        return self.norm_ffn(query + self.ffn(query)), mask


class MaskDecoder(nn.Module):
    """`num_layers` mask-decoder layers, each followed by a class head; every layer predicts.

    Args:
        num_outputs: class logits per query (thing classes, or 1 for a stuff query's own class).
        dim: model width C.
        num_layers: layers.
        num_heads: attention heads.
        ffn_dim: FFN hidden width.
        num_levels: levels of the memory, finest first.
        self_attention: layers start with self-attention among the queries.
    """

    def __init__(
        self,
        num_outputs: int,
        dim: int = 256,
        num_layers: int = 4,
        num_heads: int = 8,
        ffn_dim: int = 1024,
        num_levels: int = 3,
        self_attention: bool = False,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            MaskDecoderLayer(dim, num_heads, ffn_dim, num_levels, self_attention) for _ in range(num_layers)
        )
        self.class_heads = nn.ModuleList(nn.Linear(dim, num_outputs) for _ in range(num_layers))
        for head in self.class_heads:
            nn.init.constant_(head.bias, focal_prior_bias())

    def forward(
        self, query: Tensor, query_pos: Tensor, memory: Tensor, spatial_shapes: Tensor
    ) -> list[tuple[Tensor, Tensor]]:
        """Per layer (class logits (B, Q, num_outputs), mask logits (B, Q, H/8, W/8))."""
        predictions = []
        for layer, head in zip(self.layers, self.class_heads):
            query, mask = layer(query, query_pos, memory, spatial_shapes)
            predictions.append((head(query), mask))
        return predictions
