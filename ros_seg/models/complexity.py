"""Parameter and multiply-add counts of a model at an input size.

MACs are counted with torch.utils.flop_counter on the meta device (no real
computation, no memory), halving its FLOPs: one multiply-add counts once, the
fvcore convention of the papers' "FLOPs". Convolutions, matrix products and
attention are counted; element-wise work (norms, activations, resizing) is not.

Multi-scale deformable attention (ros_seg.ops.ms_deform_attn) counts its
linear projections only: its bilinear sampling is a gather with a weighted
sum, no matrix product, so neither this counter nor fvcore sees it; in the
Mask2Former and PRO-SCALE figures fvcore skipped the op as an unsupported
custom operator. Counting 4 corner multiply-adds plus 1 attention multiply per
sample and channel would add 5 * Lq * M * L * P * D per layer: 4.0 GMACs for
m2f_r50's encoder at 1024x2048 and 2.3 for proscale_r50_333's. Leaving it out
reproduces the papers' encoder figures (290.1 counted vs 291 published).
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_gmacs(model: nn.Module, size: tuple[int, int], all_predictions: bool = True) -> dict[str, float]:
    """GMACs of one forward pass on a (1, 3, H, W) image, in total and per top-level part.

    `all_predictions` counts the deep-supervision predictions at full mask
    resolution, as the papers do; False counts what ros_seg inference runs.
    """
    meta_model = copy.deepcopy(model).to("meta").eval().requires_grad_(False)
    image = torch.zeros((1, 3, *size), device="meta")
    counter = FlopCounterMode(display=False)
    with counter:
        meta_model(image, all_predictions=all_predictions)
    per_module = counter.get_flop_counts()
    root = type(meta_model).__name__
    parts = {
        name: sum(per_module.get(f"{root}.{name}", {}).values()) / 2e9 for name, _ in meta_model.named_children()
    }
    return {"total": counter.get_total_flops() / 2e9, **parts}
