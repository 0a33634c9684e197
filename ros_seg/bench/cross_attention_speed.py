"""PEM cross-attention vs Mask2Former masked cross-attention at growing token counts.

The PEM paper claims its prototype attention is faster than masked attention
and that the gap widens with resolution; this measures both of our layers on
the token counts of Cityscapes feature maps at 1024x2048 (1/32 .. 1/4).
"""
from __future__ import annotations

import functools

import torch

from ros_seg.bench.timing import time_calls
from ros_seg.eval.latency_metrics import latency_stats
from ros_seg.eval.machine_info import machine_info
from ros_seg.models.transformer_decoders.masked_cross_attention import MaskedCrossAttention
from ros_seg.models.transformer_decoders.pem_cross_attention import PEMCrossAttention

# Feature-map sizes of a 1024x2048 input at strides 32, 16, 8, 4.
FEATURE_SIZES = ((32, 64), (64, 128), (128, 256), (256, 512))


def bench_cross_attention(
    device: str = "cpu",
    dim: int = 256,
    num_queries: int = 100,
    num_heads: int = 8,
    warmup: int = 2,
    repeats: int = 10,
    sizes: tuple[tuple[int, int], ...] = FEATURE_SIZES,
) -> dict:
    """Forward latency of both layers (batch 1, about half the tokens masked per query)."""
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(0)
    layers = {
        "pem": PEMCrossAttention(dim, num_heads).to(dev).eval(),
        "masked": MaskedCrossAttention(dim, num_heads).to(dev).eval(),
    }
    rows = []
    for h, w in sizes:
        query = torch.randn(1, num_queries, dim, generator=gen).to(dev)
        query_pos = torch.randn(1, num_queries, dim, generator=gen).to(dev)
        feats = torch.randn(1, dim, h, w, generator=gen).to(dev)
        pos = torch.randn(1, dim, h, w, generator=gen).to(dev)
        mask = torch.randn(1, num_queries, h, w, generator=gen).to(dev)
        row = {"tokens": h * w, "feature_size": [h, w]}
        for name, layer in layers.items():
            with torch.inference_mode():
                samples = time_calls(functools.partial(layer, query, feats, mask, pos, query_pos), warmup, repeats, dev)
            row[f"{name}_ms"] = latency_stats(samples)
        row["speedup"] = round(row["masked_ms"]["p50"] / row["pem_ms"]["p50"], 2)
        rows.append(row)
    return {
        "op": "cross_attention",
        "queries": num_queries,
        "channels": dim,
        "heads": num_heads,
        "device": str(dev),
        "results": rows,
        "machine": machine_info(dev),
    }
