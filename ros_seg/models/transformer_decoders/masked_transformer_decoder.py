"""Multi-scale masked transformer decoder of Mask2Former and PEM.

Learnable queries visit the feature levels round-robin (1/32, 1/16, 1/8, ...).
Each layer: cross-attention restricted by the previous layer's mask prediction
(PEM-CA for PEM, masked attention for Mask2Former), query self-attention, FFN.
After the initial queries and after every layer, a shared head predicts class
logits (K + 1, last = no object) and mask logits (mask embedding . mask features).

At inference only the last prediction is needed at mask-feature resolution; the
earlier ones only serve as attention masks at the next level's resolution, so
they are computed there directly. Bilinear resizing and the mask product are
both linear, which makes this equal to predicting at 1/4 and resizing.
"""
from __future__ import annotations

import torch
from torch import nn

from ros_seg.models.bilinear_resize import resize_bilinear
from ros_seg.models.position_encoding import SinePositionEncoding
from ros_seg.models.transformer_decoders.decoder_layers import MLP, FeedForwardLayer, SelfAttentionLayer
from ros_seg.models.transformer_decoders.masked_cross_attention import MaskedCrossAttention
from ros_seg.models.transformer_decoders.pem_cross_attention import PEMCrossAttention

CROSS_ATTENTIONS = ("pem", "masked")


class MaskedTransformerDecoder(nn.Module):
    """Queries -> per-layer class and mask predictions.

    Args:
        in_channels: channels of the multi-scale features from the pixel decoder (projected to
            hidden_dim by a 1x1 conv when they differ).
        num_classes: number of classes K (the head predicts K + 1).
        hidden_dim: model width.
        num_queries: number of learnable queries.
        num_heads: attention heads.
        dim_feedforward: FFN hidden width.
        num_layers: decoder layers (PEM 6, Mask2Former 9).
        pre_norm: pre-LayerNorm in self-attention and FFN (PEM) or post-norm.
        mask_dim: channels of the mask features and mask embeddings.
        cross_attention: "pem" (PEM-CA) or "masked" (Mask2Former masked attention).
        num_levels: feature levels visited round-robin.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        hidden_dim: int = 256,
        num_queries: int = 100,
        num_heads: int = 8,
        dim_feedforward: int = 2048,
        num_layers: int = 6,
        pre_norm: bool = True,
        mask_dim: int = 256,
        cross_attention: str = "pem",
        num_levels: int = 3,
    ) -> None:
        super().__init__()
        if cross_attention not in CROSS_ATTENTIONS:
            raise ValueError(f"cross_attention must be one of {CROSS_ATTENTIONS}, got {cross_attention!r}")
        self.num_levels = num_levels
        self.num_classes = num_classes
        self.position_encoding = SinePositionEncoding(hidden_dim // 2)
        # As Mask2Former: a 1x1 projection only where the feature width differs from the decoder's
        # (PEM: 128 -> 256); at equal widths the features enter as they are.
        self.input_proj = nn.ModuleList(
            nn.Conv2d(in_channels, hidden_dim, 1) if in_channels != hidden_dim else nn.Identity()
            for _ in range(num_levels)
        )
        for proj in self.input_proj:
            if isinstance(proj, nn.Conv2d):
                nn.init.kaiming_uniform_(proj.weight, a=1)
                nn.init.zeros_(proj.bias)
        self.level_embed = nn.Embedding(num_levels, hidden_dim)
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        if cross_attention == "pem":
            self.cross_attention_layers = nn.ModuleList(
                PEMCrossAttention(hidden_dim, num_heads) for _ in range(num_layers)
            )
        else:
            self.cross_attention_layers = nn.ModuleList(
                MaskedCrossAttention(hidden_dim, num_heads, pre_norm) for _ in range(num_layers)
            )
        self.self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(hidden_dim, num_heads, pre_norm) for _ in range(num_layers)
        )
        self.ffn_layers = nn.ModuleList(
            FeedForwardLayer(hidden_dim, dim_feedforward, pre_norm) for _ in range(num_layers)
        )
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    def predict(self, query: torch.Tensor, mask_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits (B, Q, K+1) and mask logits (B, Q, h, w) of `mask_features` (B, D, h, w)."""
        x = self.decoder_norm(query)
        logits = self.class_embed(x)
        masks = torch.einsum("bqd,bdhw->bqhw", self.mask_embed(x), mask_features)
        return logits, masks

    def forward(
        self, features: list[torch.Tensor], mask_features: torch.Tensor, all_predictions: bool | None = None
    ) -> dict:
        """features: `num_levels` maps (B, C, h_i, w_i), coarse first; mask_features (B, D, H4, W4).

        Returns {"pred_logits": (B, Q, K+1), "pred_masks": (B, Q, H4, W4), "aux_outputs": [...]}:
        aux_outputs holds the earlier predictions at full mask resolution when
        `all_predictions` (default: in training mode), otherwise it is empty.
        """
        if len(features) != self.num_levels:
            raise ValueError(f"decoder expects {self.num_levels} feature levels, got {len(features)}")
        if all_predictions is None:
            all_predictions = self.training
        batch = mask_features.shape[0]
        sizes = [f.shape[-2:] for f in features]
        pos = [self.position_encoding(f) for f in features]
        src = [
            proj(f) + self.level_embed.weight[i][None, :, None, None]
            for i, (proj, f) in enumerate(zip(self.input_proj, features))
        ]
        # Mask features resized to each level, for attention masks predicted there directly.
        level_mask_features = [resize_bilinear(mask_features, s) for s in sizes]
        query_pos = self.query_embed.weight[None].expand(batch, -1, -1)  # (B, Q, C)
        query = self.query_feat.weight[None].expand(batch, -1, -1)  # (B, Q, C)

        aux = []
        num_layers = len(self.cross_attention_layers)
        for i in range(num_layers + 1):
            level = i % self.num_levels
            last = i == num_layers
            if all_predictions or last:
                logits, masks = self.predict(query, mask_features)
                if not last:
                    aux.append({"pred_logits": logits, "pred_masks": masks})
                attn_mask = None if last else resize_bilinear(masks, sizes[level])
            else:
                _, attn_mask = self.predict(query, level_mask_features[level])
            if last:
                break
            query = self.cross_attention_layers[i](query, src[level], attn_mask, pos[level], query_pos)
            query = self.self_attention_layers[i](query, query_pos)
            query = self.ffn_layers[i](query)
        return {"pred_logits": logits, "pred_masks": masks, "aux_outputs": aux}
