"""A checksum of named tensors: what a checkpoint stores to notice flipped bytes in its weights.

The SHA-256 covers every tensor's name, dtype, shape and bytes, in name order,
so a changed value, a renamed or reshaped tensor, or a missing one changes it.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch


def tensor_checksum(tensors: Mapping[str, torch.Tensor]) -> str:
    """Hex SHA-256 of `tensors` (names, dtypes, shapes and contents)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()
