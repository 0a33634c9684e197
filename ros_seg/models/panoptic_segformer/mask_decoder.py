"""Mask decoder of Panoptic SegFormer: attention blocks whose attention maps become masks (the authors'
`MaskHead`).

A block: optional multi-head self-attention among the queries (the stuff
decoder has it), then multi-head cross-attention from the queries to the encoder
tokens of 1/8, 1/16 and 1/32 (keys and values without position embedding), then
a GELU FFN; residual and post-norm (LayerNorm eps 1e-6) after each. The
cross-attention's logits (before the softmax) give the block's mask through
:class:`AttentionToMask`. After the last block one more cross-attention (the
"tail": queries and keys only) gives the final masks, the ones inference uses.

Query positions (the stuff queries have them, the thing queries do not) are
added to the queries before every block and before the tail, and so travel in
the residual stream and into the self-attention's values, as in the authors'
code. A class head (and, for things, a box head) per block serves deep
supervision; the last stuff class head scores the stuff queries at inference.
"""
from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn

from ros_seg.models.panoptic_segformer.attention_to_mask import AttentionToMask
from ros_seg.models.panoptic_segformer.focal_bias import focal_prior_bias
from ros_seg.models.panoptic_segformer.location_decoder import BoxHead

LAYER_NORM_EPS = 1e-6


class MaskAttention(nn.Module):
    """Cross-attention from queries to tokens whose logits make a mask; `values` adds the attended output.

    Args:
        dim: model width C.
        num_heads: attention heads M.
        num_levels: levels of the tokens, finest first.
        values: also compute the attention's output (a block's attention; the tail has none).
    """

    def __init__(self, dim: int, num_heads: int, num_levels: int = 3, values: bool = True) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"MaskAttention: dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim) if values else None
        self.out_proj = nn.Linear(dim, dim) if values else None
        self.to_mask = AttentionToMask(num_heads, num_levels)
        self.num_heads = num_heads

    def forward(
        self, query: Tensor, memory: Tensor, spatial_shapes: list[tuple[int, int]]
    ) -> tuple[Tensor | None, Tensor]:
        """query (B, Q, C), memory (B, S, C) -> (attended (B, Q, C) or None, mask (B, Q, H/8, W/8))."""
        batch, queries, dim = query.shape
        tokens, heads = memory.shape[1], self.num_heads
        q = self.q_proj(query).view(batch, queries, heads, dim // heads).transpose(1, 2)  # (B, M, Q, D)
        k = self.k_proj(memory).view(batch, tokens, heads, dim // heads).transpose(1, 2)  # (B, M, S, D)
        logits = (q @ k.transpose(-1, -2)) * (dim // heads) ** -0.5  # (B, M, Q, S)
        mask = self.to_mask(logits, spatial_shapes)
        if self.v_proj is None:
            return None, mask
        v = self.v_proj(memory).view(batch, tokens, heads, dim // heads).transpose(1, 2)  # (B, M, S, D)
        attended = (logits.softmax(-1) @ v).transpose(1, 2).reshape(batch, queries, dim)  # (B, Q, C)
        return self.out_proj(attended), mask


class QuerySelfAttention(nn.Module):
    """Multi-head self-attention among the queries: one (C, 3C) projection to queries, keys and values.

    Written out rather than nn.MultiheadAttention, whose inference fast path for identical
    query, key and value does not export to ONNX.

    Args:
        dim: model width C.
        num_heads: attention heads M.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.num_heads = num_heads

    def forward(self, x: Tensor) -> Tensor:
        """(B, Q, C) -> (B, Q, C)."""
        batch, queries, dim = x.shape
        heads = self.num_heads
        qkv = self.qkv(x).view(batch, queries, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)  # (3, B, M, Q, D)
        q, k, v = qkv.unbind(0)
        attention = ((q @ k.transpose(-1, -2)) * (dim // heads) ** -0.5).softmax(-1)  # (B, M, Q, Q)
        return self.proj((attention @ v).transpose(1, 2).reshape(batch, queries, dim))


class MaskDecoderBlock(nn.Module):
    """[self-attention ->] cross-attention (-> mask) -> FFN, each with residual and post-norm.

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
        self.self_attn = QuerySelfAttention(dim, num_heads) if self_attention else None
        self.norm_self = nn.LayerNorm(dim, eps=LAYER_NORM_EPS) if self_attention else None
        self.cross_attn = MaskAttention(dim, num_heads, num_levels)
        self.norm_cross = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Linear(ffn_dim, dim))
        self.norm_ffn = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)

    def forward(self, query: Tensor, memory: Tensor, spatial_shapes: list[tuple[int, int]]) -> tuple[Tensor, Tensor]:
        """query (B, Q, C); memory (B, S, C) -> (queries (B, Q, C), mask (B, Q, H/8, W/8))."""
        if self.self_attn is not None:
            query = self.norm_self(query + self.self_attn(query))
        attended, mask = self.cross_attn(query, memory, spatial_shapes)
        query = self.norm_cross(query + attended)
        return self.norm_ffn(query + self.ffn(query)), mask


class MaskDecoderOutput(NamedTuple):
    """Per block the queries and masks, and the tail's final masks."""

    queries: list[Tensor]  # per block (B, Q, C)
    masks: list[Tensor]  # per block (B, Q, H/8, W/8), non-negative
    final_masks: Tensor  # (B, Q, H/8, W/8), non-negative: the masks inference uses


class MaskDecoder(nn.Module):
    """`num_layers` mask-decoder blocks and the tail; a class head (and a box head, for things) per block.

    Args:
        num_outputs: class logits per query (thing classes, or 1 for a stuff query's own class).
        dim: model width C.
        num_layers: blocks.
        num_heads: attention heads.
        ffn_dim: FFN hidden width.
        num_levels: levels of the memory, finest first.
        self_attention: blocks start with self-attention among the queries.
        box_heads: a box head per block (the thing decoder; used by training only).
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
        box_heads: bool = False,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            MaskDecoderBlock(dim, num_heads, ffn_dim, num_levels, self_attention) for _ in range(num_layers)
        )
        self.tail = MaskAttention(dim, num_heads, num_levels, values=False)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        self.class_heads = nn.ModuleList(nn.Linear(dim, num_outputs) for _ in range(num_layers))
        for head in self.class_heads:
            nn.init.constant_(head.bias, focal_prior_bias())
        self.box_heads = nn.ModuleList(BoxHead(dim) for _ in range(num_layers)) if box_heads else None

    def forward(
        self, query: Tensor, query_pos: Tensor | None, memory: Tensor, spatial_shapes: list[tuple[int, int]]
    ) -> MaskDecoderOutput:
        """query, query_pos (B, Q, C) (no positions: None); memory (B, S, C) tokens of the mask levels."""
        queries, masks = [], []
        for block in self.blocks:
            query, mask = block(query if query_pos is None else query + query_pos, memory, spatial_shapes)
            queries.append(query)
            masks.append(mask)
        _, final = self.tail(query if query_pos is None else query + query_pos, memory, spatial_shapes)
        return MaskDecoderOutput(queries, masks, final)
