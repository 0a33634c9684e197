"""The training loop: iterations of data, forward, loss, backward and optimizer step, with hooks around them.

As in detectron2, the loop only trains; everything else a training does
(logging, checkpoints, evaluation, keeping the best weights, the progress bar:
`ros_seg.train.hooks`) is a `Hook` it calls at fixed points. One step: the next
batch of the run's reproducible data stream, the model under autocast when
solver.amp is set (`ros_seg.train.mixed_precision`), the family's criterion in
fp32, backward through the gradient scaler, clipping of the norm of all
gradients, the optimizer and learning-rate steps.
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ros_seg.train.training_run import TrainingRun


@dataclass(frozen=True)
class StepResult:
    """What one iteration produced.

    Args:
        terms: the detached loss terms of this process, their sum "loss" and the gradient norm "grad_norm".
        data_time: seconds spent waiting for the batch.
    """

    terms: dict[str, torch.Tensor]
    data_time: float


class Hook:
    """One concern of a training, called by `TrainLoop` at fixed points; each method does nothing by default.

    The loop calls each hook, in the order it was given them: `before_train()`
    once, `after_step(done, step)` after every iteration (`done`: iterations
    completed, counting those before a resume), `after_train()` once the last
    iteration is done, and `close()` at the end whether training finished or
    raised. Hooks run in every process; collective work (a process-group
    reduction, a checkpoint's random states) must run in all of them.
    """

    def before_train(self) -> None:
        """Called before the first iteration."""

    def after_step(self, done: int, step: StepResult) -> None:
        """Called after each iteration, `done` iterations in all having been completed."""

    def after_train(self) -> None:
        """Called after the last iteration (solver.max_iters) when training completed."""

    def close(self) -> None:
        """Called last, also when training raised: release what the hook holds."""


class TrainLoop:
    """Trains `run` from its start_iteration to solver.max_iters, calling `hooks` around the steps.

    Args:
        run: what `ros_seg.train.training_run.build_training_run` built.
        hooks: called in this order at each point of the loop.
    """

    def __init__(self, run: TrainingRun, hooks: Sequence[Hook]) -> None:
        self.run = run
        self.hooks = list(hooks)

    def train(self) -> None:
        """Run the remaining iterations."""
        batches = iter(self.run.loader)
        try:
            for hook in self.hooks:
                hook.before_train()
            for iteration in range(self.run.start_iteration, self.run.config.solver.max_iters):
                start = time.perf_counter()
                images, targets = next(batches)
                step = StepResult(self.step(images, targets), time.perf_counter() - start)
                for hook in self.hooks:
                    hook.after_step(iteration + 1, step)
            for hook in self.hooks:
                hook.after_train()
        finally:
            for hook in self.hooks:
                hook.close()

    def step(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """One optimization step on a batch; returns the (detached) loss terms, "loss" and "grad_norm"."""
        run = self.run
        device = run.context.device
        images = images.to(device, non_blocking=True)
        targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
        deep_supervision = run.config.loss.deep_supervision
        enabled, dtype = run.autocast
        with torch.autocast(device.type, dtype=dtype, enabled=enabled):
            outputs = run.ddp_model(images, all_predictions=deep_supervision)
        if not deep_supervision:
            outputs = {**outputs, "aux_outputs": []}
        losses = run.criterion(outputs, targets)
        total = sum(losses.values())
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(total).backward()
        run.scaler.unscale_(run.optimizer)
        clip = run.config.solver.clip_grad_norm
        norm = nn.utils.clip_grad_norm_(run.ddp_model.parameters(), clip if clip > 0 else math.inf)
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.scheduler.step()
        return {**{k: v.detach() for k, v in losses.items()}, "loss": total.detach(), "grad_norm": norm.detach()}
