"""A training run from a `TrainConfig`: build it, run the loop with the standard hooks, report the result.

The same in every process (a single process, or each of torchrun's):
`ros_seg.train.training_run.build_training_run` makes the model, optimizer,
data and, with `--resume`, the state of the newest checkpoint;
`ros_seg.train.loop.TrainLoop` trains; `standard_hooks` do the rest on the way
(`ros_seg.train.hooks`): metrics.jsonl lines, the progress bar, checkpoints
(`model_{iteration:07d}.pt`, `model_final.pt`, `last_checkpoint`), evaluations
(mIoU, PQ) and `model_best.pt`. Resuming restores model, optimizer, scheduler,
scaler, every process's random generators and the data position, so the losses
after a resume equal those of an uninterrupted run.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from ros_seg.train.hooks import BestWeights, MetricsLogger, PeriodicCheckpointer, PeriodicEvaluator, ProgressBar
from ros_seg.train.loop import Hook, TrainLoop
from ros_seg.train.metrics_log import MetricsLog
from ros_seg.train.run_files import BEST_CHECKPOINT, FINAL_CHECKPOINT, remove_temporary_files, write_train_config
from ros_seg.train.train_config import TrainConfig
from ros_seg.train.training_run import TrainingRun, build_training_run


def standard_hooks(run: TrainingRun) -> tuple[list[Hook], PeriodicEvaluator, BestWeights]:
    """The hooks of `ros-seg train` in the order the loop calls them, with the evaluator and the best-weights
    keeper among them (the result reads them)."""
    metrics_log = MetricsLog(run.out_dir)
    metrics = MetricsLogger(run, metrics_log)
    best = BestWeights(run, metrics_log)
    evaluator = PeriodicEvaluator(run, metrics_log, on_report=[best.consider])
    return [metrics, ProgressBar(run, metrics), PeriodicCheckpointer(run), evaluator, best], evaluator, best


def run_training(run: TrainingRun) -> dict[str, Any]:
    """Train `run` to solver.max_iters with the standard hooks; returns {"iteration", "checkpoint", "eval"} (eval on
    rank 0, None elsewhere or without a validation split), and "best" {"checkpoint", "iteration", "metric",
    "score"} when best_metric is set and an evaluation scored."""
    if run.context.is_main:
        remove_temporary_files(run.out_dir)
        write_train_config(run.out_dir, run.config)
    hooks, evaluator, best = standard_hooks(run)
    TrainLoop(run, hooks).train()
    max_iters = run.config.solver.max_iters
    result = {"iteration": max_iters, "checkpoint": str(run.out_dir / FINAL_CHECKPOINT), "eval": evaluator.report}
    if best.best is not None:
        result["best"] = {"checkpoint": str(run.out_dir / BEST_CHECKPOINT), **best.best}
    return result


def train(config: TrainConfig, out_dir: str | Path, device: str = "cpu", resume: bool = False,
          max_iters: int | None = None) -> dict[str, Any]:
    """Build and run a training (see `run_training`); `max_iters` overrides solver.max_iters."""
    if max_iters is not None:
        config = replace(config, solver=replace(config.solver, max_iters=max_iters))
    return run_training(build_training_run(config, out_dir, device=device, resume=resume))
