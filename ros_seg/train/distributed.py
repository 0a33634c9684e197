"""Data-parallel training across processes with torch.distributed.

Processes are started by `torchrun` (or any launcher that sets RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT); a plain `python` run is
a world of one and needs no process group. NCCL serves GPUs, gloo the CPU.
Each process draws its own shard of every epoch's permutation (`ShardedBatchSampler`),
gradients are averaged by DistributedDataParallel, and only rank 0 logs,
evaluates and writes checkpoints.

BatchNorm statistics are synchronized across processes: with PyTorch's
SyncBatchNorm on GPUs, with `ProcessGroupBatchNorm2d` on CPUs (PyTorch's
SyncBatchNorm runs on GPUs only).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ros_seg.models.criteria.process_group_mean import world_size
from ros_seg.train.sync_batch_norm import convert_to_process_group_batchnorm

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in the job.

    Args:
        rank: global index of the process.
        world_size: number of processes.
        local_rank: index of the process on its machine (its GPU index).
        device: the device this process computes on.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that logs, evaluates and checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


def init_distributed(device: str) -> DistributedContext:
    """Join the process group described by torchrun's environment, if any.

    device: "cpu" or "cuda"; with "cuda" each process takes GPU LOCAL_RANK and
    the NCCL backend, with "cpu" the gloo backend.
    """
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but no CUDA GPU is available: use --device cpu")
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        torch_device = torch.device("cuda", local_rank)
    else:
        torch_device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device == "cuda" else "gloo"
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world_size)
        log.info("rank %d of %d joined the %s process group", rank, world_size, backend)
    return DistributedContext(rank, world_size, local_rank, torch_device)


def shutdown_distributed() -> None:
    """Leave the process group (no-op for a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every process (no-op for a single process)."""
    if world_size() > 1:
        dist.barrier()


def wrap_model(model: nn.Module, context: DistributedContext, find_unused_parameters: bool = False) -> nn.Module:
    """Model ready for data-parallel training: synchronized BatchNorm, then DDP; unchanged for one process.

    BatchNorm layers of `model` are replaced in place (SyncBatchNorm on GPUs,
    ProcessGroupBatchNorm2d on CPUs); parameters and state-dict keys stay the same.

    `find_unused_parameters` is needed when some parameters get no gradient in a
    step (e.g. deep supervision switched off leaves intermediate heads unused).
    """
    if not context.distributed:
        return model
    if context.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(
            model, device_ids=[context.local_rank], find_unused_parameters=find_unused_parameters
        )
    model = convert_to_process_group_batchnorm(model)
    return DistributedDataParallel(model, find_unused_parameters=find_unused_parameters)


class ShardedBatchSampler:
    """Endless, reproducible stream of batches for one process, resumable at any iteration.

    Epoch e is a permutation of the dataset drawn from a generator seeded with
    (seed, e); process r takes every world_size-th index from position r, cut to
    whole batches so all processes run the same number of iterations. Batch i
    of the stream is therefore a pure function of (seed, i, rank, world_size),
    and restarting at `start_iteration` continues exactly where a run left off.
    Each element of a batch is a key (epoch, dataset index), so augmentation can
    be seeded from it too.

    With `weights` (repeat-factor sampling, `ros_seg.train.repeat_factors`),
    epoch e is instead dataset_size draws with replacement, each image drawn
    with probability proportional to its weight; the epoch keeps its length,
    so positions and resuming work as without. The k-th repeat (k >= 1) of an
    image within an epoch has the key (epoch, index, k), so its augmentation
    differs from the first draw's.

    Args:
        dataset_size: number of samples in the dataset.
        batch_size: samples per batch of this process.
        seed: seed of the epoch permutations.
        rank: this process's index.
        world_size: number of processes.
        start_iteration: index of the first batch to produce.
        weights: (dataset_size,) positive sampling weights, or None for permutations.
    """

    def __init__(
        self,
        dataset_size: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start_iteration: int = 0,
        weights: Sequence[float] | None = None,
    ) -> None:
        self.batches_per_epoch = dataset_size // world_size // batch_size
        if self.batches_per_epoch < 1:
            raise ValueError(
                f"the dataset has {dataset_size} samples, fewer than one batch of {batch_size} per process "
                f"for {world_size} process(es): use a smaller batch size or more data"
            )
        self.dataset_size = dataset_size
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start_iteration = start_iteration
        self.weights = None
        if weights is not None:
            self.weights = torch.as_tensor(weights, dtype=torch.float64)
            if self.weights.shape != (dataset_size,):
                raise ValueError(
                    f"sampling weights must be {dataset_size} positive numbers (one per sample), "
                    f"got shape {tuple(self.weights.shape)}"
                )
            bad = torch.nonzero(~(self.weights > 0)).flatten().tolist()
            if bad:
                raise ValueError(f"sampling weights must be positive; {len(bad)} are not, the first at sample {bad[0]}")

    def position(self, iteration: int) -> dict[str, int]:
        """{"epoch", "batch"}: where in the data stream batch `iteration` lies."""
        return {"epoch": iteration // self.batches_per_epoch, "batch": iteration % self.batches_per_epoch}

    def _epoch_keys(self, epoch: int) -> list[tuple[int, ...]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        if self.weights is None:
            order = torch.randperm(self.dataset_size, generator=generator).tolist()
            keys = [(epoch, i) for i in order]
        else:
            order = torch.multinomial(self.weights, self.dataset_size, replacement=True, generator=generator).tolist()
            seen: dict[int, int] = {}
            keys = []
            for i in order:
                repeat = seen.get(i, 0)
                seen[i] = repeat + 1
                keys.append((epoch, i) if repeat == 0 else (epoch, i, repeat))
        return keys[self.rank :: self.world_size][: self.batches_per_epoch * self.batch_size]

    def __iter__(self) -> Iterator[list[tuple[int, ...]]]:
        start = self.position(self.start_iteration)
        epoch, batch = start["epoch"], start["batch"]
        while True:
            keys = self._epoch_keys(epoch)
            for b in range(batch, self.batches_per_epoch):
                yield keys[b * self.batch_size : (b + 1) * self.batch_size]
            epoch, batch = epoch + 1, 0
