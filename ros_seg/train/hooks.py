"""The hooks of a training: metrics log, progress bar, checkpoints, periodic evaluation, best weights.

Each is a `ros_seg.train.loop.Hook` over one `TrainingRun`; `ros_seg.train.trainer`
puts them together in the order `MetricsLogger`, `ProgressBar`,
`PeriodicCheckpointer`, `PeriodicEvaluator`, `BestWeights`. A period of 0
switches its periodic work off; the last iteration is always logged,
checkpointed (model_final.pt) and evaluated. Only rank 0 writes files.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from tqdm import tqdm

from ros_seg.models.checkpoint import save_checkpoint
from ros_seg.models.criteria.process_group_mean import all_reduce_mean
from ros_seg.train.distributed import barrier
from ros_seg.train.evaluation import evaluate
from ros_seg.train.loop import Hook, StepResult
from ros_seg.train.metrics_log import MetricsLog
from ros_seg.train.run_files import (
    BEST_CHECKPOINT,
    FINAL_CHECKPOINT,
    checkpoint_name,
    point_last_checkpoint_at,
    remove_old_checkpoints,
)
from ros_seg.train.training_run import TrainingRun
from ros_seg.train.training_state import capture_training_state

log = logging.getLogger(__name__)


def is_due(period: int, done: int) -> bool:
    """Whether periodic work with `period` (0: never) falls after `done` iterations."""
    return period > 0 and done % period == 0


class MetricsLogger(Hook):
    """Every log_period iterations and after the last: the loss terms averaged over the processes, checked to be
    finite, with the learning rate and the mean iteration and data-wait times since the previous line, as a
    line of metrics.jsonl (rank 0).

    Args:
        run: the training run.
        metrics_log: the log the lines go to.
    """

    def __init__(self, run: TrainingRun, metrics_log: MetricsLog) -> None:
        self.run = run
        self.metrics_log = metrics_log
        self.latest: dict[str, Any] | None = None  # the newest line, in every process

    def _start_window(self) -> None:
        self.window_start, self.window_data, self.window_iters = time.perf_counter(), 0.0, 0

    def before_train(self) -> None:
        self._start_window()

    def after_step(self, done: int, step: StepResult) -> None:
        self.window_data += step.data_time
        self.window_iters += 1
        if not (is_due(self.run.config.log_period, done) or done == self.run.config.solver.max_iters):
            return
        names = sorted(step.terms)
        values = all_reduce_mean(torch.stack([step.terms[n].float() for n in names])).tolist()
        entry = dict(zip(names, values))
        if not math.isfinite(entry["loss"]):
            raise FloatingPointError(f"loss became {entry['loss']} at iteration {done}")
        elapsed = time.perf_counter() - self.window_start
        self.latest = {"iter": done, **entry, "lr": self.run.scheduler.get_last_lr()[0],
                       "time": elapsed / self.window_iters, "data_time": self.window_data / self.window_iters}
        if self.run.context.is_main:
            self.metrics_log.append(self.latest)
        self._start_window()


class ProgressBar(Hook):
    """rank 0's progress bar (it/s, ETA) with the loss and learning rate of the newest metrics line.

    Args:
        run: the training run.
        metrics: the logger whose lines it shows (called before this hook).
    """

    def __init__(self, run: TrainingRun, metrics: MetricsLogger) -> None:
        self.run = run
        self.metrics = metrics
        self.bar: tqdm | None = None

    def before_train(self) -> None:
        self.bar = tqdm(total=self.run.config.solver.max_iters, initial=self.run.start_iteration,
                        disable=not self.run.context.is_main, desc="train", dynamic_ncols=True, mininterval=1.0)

    def after_step(self, done: int, step: StepResult) -> None:
        self.bar.update(1)
        latest = self.metrics.latest
        if self.run.context.is_main and latest is not None and latest["iter"] == done:
            self.bar.set_postfix(loss=f"{latest['loss']:.3f}", lr=f"{latest['lr']:.2e}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class PeriodicCheckpointer(Hook):
    """Writes `model_{iteration:07d}.pt` every checkpoint_period iterations and `model_final.pt` after the last,
    atomically, points `last_checkpoint` at the newest and deletes periodic checkpoints beyond the newest
    keep_checkpoints.

    A checkpoint holds the model config, class metadata and weights (loadable by
    every ros_seg tool) and, under "extra", the training state a resume restores
    (`ros_seg.train.training_state`).
    """

    def __init__(self, run: TrainingRun) -> None:
        self.run = run

    def after_step(self, done: int, step: StepResult) -> None:
        if done < self.run.config.solver.max_iters and is_due(self.run.config.checkpoint_period, done):
            self.save(checkpoint_name(done), done)

    def after_train(self) -> None:
        self.save(FINAL_CHECKPOINT, self.run.config.solver.max_iters)

    def save(self, name: str, iteration: int) -> None:
        """Write checkpoint `OUT/name` after `iteration` iterations (collective; rank 0 writes)."""
        run = self.run
        extra = capture_training_state(iteration, run.optimizer, run.scheduler, run.scaler,
                                       run.sampler.position(iteration), run.context, run.config)
        if run.context.is_main:
            save_checkpoint(run.out_dir / name, run.model, run.model_config, run.metadata, extra=extra)
            point_last_checkpoint_at(run.out_dir, name)
            remove_old_checkpoints(run.out_dir, run.config.keep_checkpoints)
        barrier()


class PeriodicEvaluator(Hook):
    """Scores the model on the validation split every eval_period iterations and after the last (mIoU, PQ), on
    rank 0 while the others wait, and logs each report as a line {"iter", "eval"} of metrics.jsonl.

    Args:
        run: the training run (without a validation split nothing is evaluated).
        metrics_log: the log the reports go to.
        on_report: called with (iteration, report) after each evaluation that scored (rank 0).
    """

    def __init__(self, run: TrainingRun, metrics_log: MetricsLog,
                 on_report: Sequence[Callable[[int, dict[str, Any]], None]] = ()) -> None:
        self.run = run
        self.metrics_log = metrics_log
        self.on_report = list(on_report)
        self.report: dict[str, Any] | None = None  # of the newest evaluation

    def after_step(self, done: int, step: StepResult) -> None:
        if done < self.run.config.solver.max_iters and is_due(self.run.config.eval_period, done):
            self.evaluate(done)

    def after_train(self) -> None:
        self.evaluate(self.run.config.solver.max_iters)

    def evaluate(self, iteration: int) -> dict[str, Any] | None:
        """The accuracy after `iteration` iterations (None on other ranks and without a validation split)."""
        run, report = self.run, None
        if run.val_set is not None:
            size = tuple(run.config.data.eval_size) if run.config.data.eval_size else None
            report = evaluate(run.model, run.val_set, run.family, run.context.device, size=size, progress=True)
            run.model.train()
        barrier()
        self.report = report
        if report is not None and run.context.is_main:
            self.metrics_log.append({"iter": iteration, "eval": report})
            log.info("iteration %d: mIoU %s, PQ %s", iteration, report["miou"], report["pq"])
            for consumer in self.on_report:
                consumer(iteration, report)
        return report


def best_evaluation(records: list[dict[str, Any]], metric: str) -> dict[str, Any] | None:
    """{"iteration", "metric", "score"} of the best evaluation on `metric` among metrics.jsonl `records` (the first
    of equal scores; evaluations without a score skipped), or None when none scored."""
    best = None
    for record in records:
        score = (record.get("eval") or {}).get(metric)
        if score is not None and (best is None or score > best["score"]):
            best = {"iteration": record["iter"], "metric": metric, "score": score}
    return best


class BestWeights(Hook):
    """With best_metric set, keeps in `model_best.pt` the weights of the best evaluation so far (weights only; its
    extra names the iteration, metric and score); a resumed run starts from the best evaluation in its log.

    Give its `consider` to `PeriodicEvaluator(on_report=...)`.
    """

    def __init__(self, run: TrainingRun, metrics_log: MetricsLog) -> None:
        self.run = run
        self.metrics_log = metrics_log
        self.best: dict[str, Any] | None = None  # {"iteration", "metric", "score"}

    def before_train(self) -> None:
        metric = self.run.config.best_metric
        if metric is not None and self.run.context.is_main:
            self.best = best_evaluation(self.metrics_log.records(), metric)

    def consider(self, iteration: int, report: dict[str, Any]) -> None:
        """Write model_best.pt when `report` beats the evaluations before on best_metric (rank 0)."""
        run, metric = self.run, self.run.config.best_metric
        score = report.get(metric) if metric is not None else None
        if score is None or (self.best is not None and score <= self.best["score"]):
            return
        self.best = {"iteration": iteration, "metric": metric, "score": score}
        save_checkpoint(run.out_dir / BEST_CHECKPOINT, run.model, run.model_config, run.metadata,
                        extra=dict(self.best))
        log.info("best %s so far (%.2f): weights of iteration %d written to %s", metric, score, iteration,
                 BEST_CHECKPOINT)
