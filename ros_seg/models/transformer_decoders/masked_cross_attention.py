"""Masked cross-attention of Mask2Former (Cheng et al., CVPR 2022).

Standard multi-head attention from queries to the tokens of one feature level,
restricted to the tokens inside each query's predicted mask (logit >= 0) of the
previous decoder layer; a query whose mask is empty attends to everything.
Same call signature as PEMCrossAttention, so decoders can use either.
"""
from __future__ import annotations

import torch
from torch import nn


class MaskedCrossAttention(nn.Module):
    """Multi-head cross-attention with mask-restricted keys, residual and LayerNorm.

    Args:
        dim: model width.
        num_heads: attention heads.
        pre_norm: LayerNorm before attention (else after the residual, as Mask2Former).
    """

    def __init__(self, dim: int = 256, num_heads: int = 8, pre_norm: bool = False) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.pre_norm = pre_norm
        for p in self.attn.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

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
        memory = features.flatten(2).transpose(1, 2)  # (B, N, C)
        key = (features + pos).flatten(2).transpose(1, 2)  # (B, N, C)
        attn_mask = None
        if mask_logits is not None:
            hidden = mask_logits.detach().flatten(2) < 0  # (B, Q, N)
            hidden = hidden & ~hidden.all(dim=2, keepdim=True)
            attn_mask = hidden.repeat_interleave(self.num_heads, dim=0)  # (B*heads, Q, N)
        q = self.norm(query) if self.pre_norm else query
        out = self.attn(q + query_pos, key, memory, attn_mask=attn_mask, need_weights=False)[0]
        query = query + out
        return query if self.pre_norm else self.norm(query)
