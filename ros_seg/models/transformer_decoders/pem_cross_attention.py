"""Prototype-based masked cross-attention (PEM-CA), Cavagnero et al., CVPR 2024.

Instead of attending to every visible token, each query picks one prototype per
head: the visible token most similar to it (cosine similarity, argmax). The
prototype and the query interact through an element-wise product, a linear
layer and a normalization over the query axis, so the cost grows with the
number of tokens only through one similarity product and an argmax.

Implemented as in the authors' code (which trained checkpoints expect):
1. memory = features + pos -> BatchNorm -> depthwise 3x3 conv -> Linear;
   query = (queries + query_pos) -> LayerNorm -> Linear;
2. both L2-normalized over all channels, then split into heads;
3. tokens where the previous prediction's mask logit is < 0 are excluded; if
   every query of an image is fully masked, the image's mask is lifted;
4. prototype = argmax token per head and query;
5. out = normalize(Linear(P * Q), over queries) * alpha + P -> Linear -> + queries.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LocalFeatureProjection(nn.Module):
    """BatchNorm -> depthwise 3x3 conv -> flatten -> Linear: (B, C, H, W) -> (B, H*W, C).

    Args:
        dim: feature width.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(dim)
        self.local = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.linear = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.local(self.norm(x))
        return self.linear(x.flatten(2).transpose(1, 2))  # (B, N, C)


def visible_tokens(mask_logits: torch.Tensor) -> torch.Tensor:
    """(B, Q, h, w) mask logits -> (B, Q, h*w) bool, True where a query may look.

    A token is hidden where the logit is < 0; an image whose queries are all
    fully hidden gets everything visible again.
    """
    hidden = mask_logits.detach().flatten(2) < 0  # (B, Q, N)
    all_hidden = hidden.all(dim=2).all(dim=1)  # (B,)
    return ~(hidden & ~all_hidden[:, None, None])


class PEMCrossAttention(nn.Module):
    """PEM cross-attention with the same call signature as MaskedCrossAttention.

    Args:
        dim: model width.
        num_heads: number of heads (prototypes per query).
    """

    def __init__(self, dim: int = 256, num_heads: int = 8) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"PEMCrossAttention: dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.feature_proj = LocalFeatureProjection(dim)
        self.query_proj = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim))
        self.proj = nn.Linear(dim, dim)
        self.final = nn.Linear(dim, dim)
        self.alpha = nn.Parameter(torch.ones(dim))

    def prototypes(
        self, memory: torch.Tensor, query: torch.Tensor, visible: torch.Tensor | None
    ) -> torch.Tensor:
        """Most similar visible token per head: (B, N, C), (B, Q, C), (B, Q, N) -> (B, Q, C).

        Both inputs are L2-normalized over C, so a head's similarity lies in [-1, 1]:
        hidden tokens are pushed out of reach by subtracting 4 (one broadcast add,
        much cheaper than filling -inf). A query that sees no token takes token 0,
        as argmax over an all -inf row does in the authors' code.
        """
        b, n, c = memory.shape
        q = query.shape[1]
        h, d = self.num_heads, c // self.num_heads
        mem = memory.view(b, n, h, d).transpose(1, 2)  # (B, h, N, d)
        qry = query.view(b, q, h, d).transpose(1, 2)  # (B, h, Q, d)
        with torch.no_grad():  # only the argmax is used: no graph through the similarities
            sim = qry @ mem.transpose(2, 3)  # (B, h, Q, N)
            if visible is not None:
                sim.add_((~visible[:, None]).to(sim.dtype), alpha=-4.0)
            index = sim.argmax(dim=3)  # (B, h, Q)
            if visible is not None:
                index.masked_fill_(~visible.any(dim=2)[:, None], 0)
        proto = mem.gather(2, index[..., None].expand(-1, -1, -1, d))  # (B, h, Q, d)
        return proto.transpose(1, 2).reshape(b, q, c)

    def forward(
        self,
        query: torch.Tensor,
        features: torch.Tensor,
        mask_logits: torch.Tensor | None,
        pos: torch.Tensor,
        query_pos: torch.Tensor,
    ) -> torch.Tensor:
        """query (B, Q, C); features (B, C, h, w); mask_logits (B, Q, h, w) or None;
        pos (1 or B, C, h, w); query_pos (B or 1, Q, C) -> (B, Q, C)."""
        memory = F.normalize(self.feature_proj(features + pos), dim=-1)  # (B, N, C)
        key = F.normalize(self.query_proj(query + query_pos), dim=-1)  # (B, Q, C)
        visible = visible_tokens(mask_logits) if mask_logits is not None else None
        proto = self.prototypes(memory, key, visible)  # (B, Q, C)
        out = F.normalize(self.proj(proto * key), dim=1) * self.alpha + proto
        return self.final(out) + query
