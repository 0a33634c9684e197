"""Parameter and multiply-add counts of a model at an input size.

MACs are counted with torch.utils.flop_counter on the meta device (no real
computation, no memory), halving its FLOPs: one multiply-add counts once, the
fvcore convention of the papers' "FLOPs". Convolutions, matrix products and
attention are counted; element-wise work (norms, activations, resizing) is not.
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
