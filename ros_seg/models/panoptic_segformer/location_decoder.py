"""Location decoder of Panoptic SegFormer: Deformable DETR's decoder with iterative box refinement.

Learnable thing queries (content + position) attend to each other (multi-head
self-attention) and to the encoder's multi-scale tokens (deformable attention
around their reference points), post-norm, ReLU FFN. After every layer an MLP
predicts a box (cx, cy, w, h, normalized to the padded image) as a correction of
the reference in inverse-sigmoid space; the detached box is the next layer's
reference (the first layer's is a point predicted from the query position). The
paper describes the location as centre + scale; the authors' code predicts
boxes supervised with L1 + GIoU, which is what this does. Every layer also
classifies its queries (focal-style logits over the thing classes); the last
layer's class scores rank the thing detections at inference, and its queries go
on to the mask decoder.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from ros_seg.models.ms_deform_attn_module import MSDeformAttn
from ros_seg.models.panoptic_segformer.focal_bias import focal_prior_bias
from ros_seg.models.pixel_decoders.msdeformattn_pixel_decoder import FlatLevels


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """logit(x) with x clamped to [eps, 1 - eps] away from the ends."""
    x = x.clamp(0.0, 1.0)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def refine_box(delta: Tensor, reference: Tensor) -> Tensor:
    """Box (B, Q, 4) sigmoid (cx, cy, w, h) from offsets `delta` (B, Q, 4) around a (B, Q, 2 or 4) reference."""
    if reference.shape[-1] == 4:
        return (delta + inverse_sigmoid(reference)).sigmoid()
    centre = delta[..., :2] + inverse_sigmoid(reference)
    return torch.cat((centre, delta[..., 2:]), dim=-1).sigmoid()


class BoxHead(nn.Module):
    """3-layer MLP (ReLU) from a query to 4 box offsets; the last layer starts at zero.

    Args:
        dim: query width.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 4))
        nn.init.zeros_(self.layers[-1].weight)
        nn.init.zeros_(self.layers[-1].bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class LocationDecoderLayer(nn.Module):
    """Self-attention -> deformable cross-attention -> FFN, each with residual and post-norm.

    Args:
        dim: model width C.
        num_levels: feature levels of the memory.
        num_heads: attention heads.
        num_points: deformable sampling points per head and level.
        ffn_dim: FFN hidden width.
    """

    def __init__(self, dim: int, num_levels: int, num_heads: int, num_points: int, ffn_dim: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn = MSDeformAttn(dim, num_levels, num_heads, num_points)
        self.norm2 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, query: Tensor, query_pos: Tensor, reference: Tensor, memory: FlatLevels) -> Tensor:
        """query, query_pos (B, Q, C); reference (B, Q, L, 2 or 4) -> (B, Q, C)."""
        q = query + query_pos
        query = self.norm1(query + self.self_attn(q, q, query, need_weights=False)[0])
        attended = self.cross_attn(
            query + query_pos, reference, memory.tokens, memory.spatial_shapes, memory.level_start_index
        )
        query = self.norm2(query + attended)
        return self.norm3(query + self.linear2(torch.relu(self.linear1(query))))


class LocationOutput(NamedTuple):
    """What the location decoder hands on."""

    queries: Tensor  # (B, Q, C) last layer's queries
    query_pos: Tensor  # (B, Q, C) learned query positions
    boxes: list[Tensor]  # per layer (B, Q, 4) sigmoid (cx, cy, w, h)
    logits: list[Tensor]  # per layer (B, Q, K_things)
    last_reference: Tensor  # (B, Q, 2 or 4) the reference the last layer refined


class LocationDecoder(nn.Module):
    """`num_layers` deformable decoder layers refining `num_queries` thing queries and their boxes.

    Args:
        num_queries: thing queries.
        num_thing_classes: classes of the per-layer classification heads.
        dim: model width C.
        num_levels: feature levels of the memory.
        num_layers: decoder layers.
        num_heads: attention heads.
        num_points: deformable sampling points per head and level.
        ffn_dim: FFN hidden width.
    """

    def __init__(
        self,
        num_queries: int,
        num_thing_classes: int,
        dim: int = 256,
        num_levels: int = 4,
        num_layers: int = 6,
        num_heads: int = 8,
        num_points: int = 4,
        ffn_dim: int = 1024,
    ) -> None:
        super().__init__()
        self.query_embedding = nn.Embedding(num_queries, 2 * dim)  # position | content
        self.reference_points = nn.Linear(dim, 2)
        nn.init.xavier_uniform_(self.reference_points.weight)
        nn.init.zeros_(self.reference_points.bias)
        self.layers = nn.ModuleList(
            LocationDecoderLayer(dim, num_levels, num_heads, num_points, ffn_dim) for _ in range(num_layers)
        )
        self.box_heads = nn.ModuleList(BoxHead(dim) for _ in range(num_layers))
        nn.init.constant_(self.box_heads[0].layers[-1].bias[2:], -2.0)  # first boxes start small
        self.class_heads = nn.ModuleList(nn.Linear(dim, num_thing_classes) for _ in range(num_layers))
        for head in self.class_heads:
            nn.init.constant_(head.bias, focal_prior_bias())
        self.dim = dim

    def forward(self, memory: FlatLevels) -> LocationOutput:
        """Encoder tokens of all levels -> refined queries, their positions, boxes and class logits."""
        batch, levels = memory.tokens.shape[0], memory.spatial_shapes.shape[0]
        query_pos, query = self.query_embedding.weight.split(self.dim, dim=-1)  # (Q, C) each
        query_pos = query_pos[None].expand(batch, -1, -1)
        query = query[None].expand(batch, -1, -1)
        reference = self.reference_points(query_pos).sigmoid()  # (B, Q, 2)
        boxes, logits = [], []
        last_reference = reference
        for layer, box_head, class_head in zip(self.layers, self.box_heads, self.class_heads):
            per_level = reference[:, :, None].expand(-1, -1, levels, -1)  # (B, Q, L, 2 or 4)
            query = layer(query, query_pos, per_level, memory)
            box = refine_box(box_head(query), reference)
            boxes.append(box)
            logits.append(class_head(query))
            last_reference, reference = reference, box.detach()
        return LocationOutput(query, query_pos, boxes, logits, last_reference)
