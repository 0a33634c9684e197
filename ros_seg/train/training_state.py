"""What a training checkpoint holds beyond the weights, and how a resume restores it.

A checkpoint's "extra" is the training state after some iteration: the
iteration, the optimizer, scheduler and gradient-scaler states, the random
generators of every process, the position in the data stream and the training
config. Restoring all of it makes the iterations after a resume equal those of
an uninterrupted run; the metrics log loses the lines of iterations after the
checkpoint, so it reads as that run's log too.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from ros_seg.models.checkpoint import load_weights, read_checkpoint
from ros_seg.train.distributed import DistributedContext
from ros_seg.train.metrics_log import MetricsLog
from ros_seg.train.optimizer import WarmupSchedule, load_optimizer_state
from ros_seg.train.rng_state import capture_rng_state, restore_rng_state
from ros_seg.train.run_files import LAST_CHECKPOINT, latest_checkpoint
from ros_seg.train.train_config import TrainConfig

log = logging.getLogger(__name__)


def capture_training_state(
    iteration: int,
    optimizer: torch.optim.Optimizer,
    scheduler: LambdaLR,
    scaler: torch.amp.GradScaler,
    data_position: dict[str, int],
    context: DistributedContext,
    config: TrainConfig,
) -> dict[str, Any]:
    """The "extra" of a checkpoint after `iteration` iterations (collective: every process calls it).

    data_position: {"epoch", "batch"} of batch `iteration` in the data stream.
    """
    rng = capture_rng_state()
    if context.distributed:
        states: list[Any] = [None] * context.world_size
        dist.all_gather_object(states, rng)
    else:
        states = [rng]
    return {
        "iteration": iteration,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": states,
        "data_position": {**data_position, "world_size": context.world_size},
        "train_config": config.to_dict(),
    }


def resume_training_state(
    out_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LambdaLR,
    scaler: torch.amp.GradScaler,
    context: DistributedContext,
    seed: int,
) -> int:
    """Load the weights and training state of the newest checkpoint in `out_dir` and cut its metrics log back to
    it (rank 0); returns the checkpoint's iteration, where training goes on.

    The schedule follows the current config (a warning says when it differs from
    the checkpoint's). Resuming with another number of processes cannot restore
    every process's random generator: they are seeded from (seed, rank, iteration)
    instead, with a warning.
    """
    path = latest_checkpoint(out_dir)
    if path is None:
        raise ValueError(f"nothing to resume: {out_dir} has no {LAST_CHECKPOINT} file")
    checkpoint = read_checkpoint(path)
    extra = checkpoint.extra
    if "optimizer" not in extra:
        raise ValueError(f"{path} holds weights only, no training state to resume from")
    load_weights(model, checkpoint.state_dict, str(path))
    load_optimizer_state(optimizer, extra["optimizer"])
    schedule = vars(scheduler.lr_lambdas[0]).copy()
    scheduler.load_state_dict(extra["scheduler"])
    restored: WarmupSchedule = scheduler.lr_lambdas[0]
    if vars(restored) != schedule:
        log.warning("the solver schedule changed since %s (%s -> %s): following the config", path,
                    vars(restored), schedule)
        restored.__dict__.update(schedule)
    scaler.load_state_dict(extra["scaler"])
    states = extra["rng"]
    if len(states) == context.world_size:
        restore_rng_state(states[context.rank])
    else:
        log.warning("resuming %d processes from a run of %d: random draws differ from the original run",
                    context.world_size, len(states))
        torch.manual_seed(seed * 1000 + context.rank + extra["iteration"])
    iteration = int(extra["iteration"])
    if context.is_main:
        MetricsLog(out_dir).truncate_after(iteration)
    log.info("resumed from %s at iteration %d", path, iteration)
    return iteration
