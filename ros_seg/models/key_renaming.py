"""Rename the tensors of another code base's checkpoint to ros_seg's module names.

A rule is (regular expression on the foreign key, replacement); the first rule
that matches wins, and a replacement of None drops the tensor (one that only
training uses, e.g. a loss weight). A key no rule knows is an error that lists
every such key, so a checkpoint of another model is refused, not half-loaded.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import torch

from ros_seg.models.checkpoint import CheckpointError

RenameRules = list[tuple[str, str | None]]


@dataclass
class RenamedWeights:
    """Tensors under ros_seg names, and the foreign names that were dropped on purpose."""

    tensors: dict[str, torch.Tensor]
    dropped: list[str] = field(default_factory=list)


def rename_weights(
    weights: dict[str, torch.Tensor | np.ndarray],
    rules: RenameRules,
    expected: dict[str, torch.Tensor],
    source: str,
) -> RenamedWeights:
    """`weights` renamed by `rules` (numpy arrays become tensors).

    `expected` is the target model's state dict: a tensor with the target's
    number of values but another shape is reshaped to it (e.g. PEM-CA alpha
    stored as (1, 1, C)). Missing and mis-shaped tensors are left to the strict
    load that follows (ros_seg.models.checkpoint.load_weights), which lists them.
    """
    compiled = [(re.compile(pattern), replacement) for pattern, replacement in rules]
    renamed = RenamedWeights({})
    unknown = []
    for key, value in weights.items():
        match = next(((p, r) for p, r in compiled if p.search(key)), None)
        if match is None:
            unknown.append(key)
            continue
        pattern, replacement = match
        if replacement is None:
            renamed.dropped.append(key)
            continue
        new_key = pattern.sub(replacement, key)
        tensor = torch.from_numpy(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) else value
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"{source}: {key} holds a {type(value).__name__}, not a tensor")
        target = expected.get(new_key)
        if target is not None and tensor.shape != target.shape and tensor.numel() == target.numel():
            tensor = tensor.reshape(target.shape)
        renamed.tensors[new_key] = tensor
    if unknown:
        shown = ", ".join(unknown[:20]) + (f" ... and {len(unknown) - 20} more" if len(unknown) > 20 else "")
        raise CheckpointError(f"unrecognized tensors in {source} (is it a checkpoint of this model?): {shown}")
    return renamed
