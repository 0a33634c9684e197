"""Sums and means of a tensor over the processes of a data-parallel job (the tensor itself without one).

The criteria normalize their losses by the number of target masks of the whole
batch, which is spread over the processes; training's logging averages with the
same functions.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


def world_size() -> int:
    """Number of processes in the job (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of `tensor` over all processes (a copy; `tensor` itself is unchanged)."""
    total = tensor.detach().clone()
    if world_size() > 1:
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of `tensor` over all processes."""
    return all_reduce_sum(tensor) / world_size()
