"""Query self-attention, feed-forward and mask-embedding blocks of MaskFormer-style decoders."""
from __future__ import annotations

import torch
from torch import nn


class SelfAttentionLayer(nn.Module):
    """Multi-head self-attention among queries with residual and LayerNorm.

    Args:
        dim: model width.
        num_heads: attention heads.
        pre_norm: normalize before attention (the normalized queries are also the values).
    """

    def __init__(self, dim: int = 256, num_heads: int = 8, pre_norm: bool = False) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.pre_norm = pre_norm
        for p in self.attn.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, query: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        """query (B, Q, C), query_pos (B or 1, Q, C) -> (B, Q, C)."""
        x = self.norm(query) if self.pre_norm else query
        qk = x + query_pos
        query = query + self.attn(qk, qk, x, need_weights=False)[0]
        return query if self.pre_norm else self.norm(query)


class FeedForwardLayer(nn.Module):
    """Linear -> ReLU -> Linear with residual and LayerNorm.

    Args:
        dim: model width.
        hidden_dim: width of the hidden layer.
        pre_norm: normalize before the MLP.
    """

    def __init__(self, dim: int = 256, hidden_dim: int = 2048, pre_norm: bool = False) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden_dim)
        self.linear2 = nn.Linear(hidden_dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.pre_norm = pre_norm
        nn.init.xavier_uniform_(self.linear1.weight)
        nn.init.xavier_uniform_(self.linear2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(x) if self.pre_norm else x
        x = x + self.linear2(torch.relu(self.linear1(y)))
        return x if self.pre_norm else self.norm(x)


class MLP(nn.Module):
    """Stack of Linear layers with ReLU between them (children `layers.i`).

    Args:
        in_dim: input width.
        hidden_dim: width of the hidden layers.
        out_dim: output width.
        num_layers: number of Linear layers.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x
