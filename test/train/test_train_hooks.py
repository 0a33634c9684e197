"""The training loop's hook protocol and each hook's schedule: call order, periods, metrics lines, best weights."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from ros_seg.data.synthetic_scenes import write_dataset
from ros_seg.models.checkpoint import read_checkpoint
from ros_seg.train.hooks import BestWeights, MetricsLogger, PeriodicCheckpointer, PeriodicEvaluator
from ros_seg.train.loop import Hook, StepResult, TrainLoop
from ros_seg.train.metrics_log import MetricsLog
from ros_seg.train.run_files import BEST_CHECKPOINT
from ros_seg.train.train_config import TrainConfig
from ros_seg.train.trainer import standard_hooks
from ros_seg.train.training_run import build_training_run

from tiny_model import TINY_MODEL


class BatchValueLoop(TrainLoop):
    """The real loop with a stand-in step: the loss of a batch is its value, so no model is needed."""

    def step(self, images: torch.Tensor, targets: list) -> dict[str, torch.Tensor]:
        return {"loss": torch.tensor(float(images)), "grad_norm": torch.tensor(1.0)}


def stand_in_run(start: int, max_iters: int, **config: int) -> SimpleNamespace:
    """What the hooks read of a TrainingRun: batches 1, 2, ... from iteration `start` on, periods from `config`."""
    periods = {"log_period": 0, "checkpoint_period": 0, "eval_period": 0, **config}
    return SimpleNamespace(
        loader=[(float(i + 1), []) for i in range(start, max_iters)],
        start_iteration=start,
        config=SimpleNamespace(solver=SimpleNamespace(max_iters=max_iters), **periods),
        context=SimpleNamespace(is_main=True),
        scheduler=SimpleNamespace(get_last_lr=lambda: [0.25]),
    )


class Recorder(Hook):
    def __init__(self, name: str, calls: list, fail_at: int | None = None) -> None:
        self.name, self.calls, self.fail_at = name, calls, fail_at

    def before_train(self) -> None:
        self.calls.append((self.name, "before_train"))

    def after_step(self, done: int, step: StepResult) -> None:
        self.calls.append((self.name, "after_step", done, step.terms["loss"].item()))
        if done == self.fail_at:
            raise RuntimeError(f"{self.name} failed")

    def after_train(self) -> None:
        self.calls.append((self.name, "after_train"))

    def close(self) -> None:
        self.calls.append((self.name, "close"))


def test_loop_calls_hooks_in_their_order_from_the_start_iteration() -> None:
    calls: list = []
    BatchValueLoop(stand_in_run(start=2, max_iters=4), [Recorder("a", calls), Recorder("b", calls)]).train()
    assert calls == [
        ("a", "before_train"), ("b", "before_train"),
        ("a", "after_step", 3, 3.0), ("b", "after_step", 3, 3.0),
        ("a", "after_step", 4, 4.0), ("b", "after_step", 4, 4.0),
        ("a", "after_train"), ("b", "after_train"),
        ("a", "close"), ("b", "close"),
    ]


def test_a_failing_hook_ends_training_but_every_hook_is_closed() -> None:
    calls: list = []
    loop = BatchValueLoop(stand_in_run(start=0, max_iters=5), [Recorder("a", calls, fail_at=2), Recorder("b", calls)])
    with pytest.raises(RuntimeError, match="a failed"):
        loop.train()
    assert calls[-3:] == [("a", "after_step", 2, 2.0), ("a", "close"), ("b", "close")]
    assert ("a", "after_train") not in calls and ("b", "after_step", 2, 2.0) not in calls


def test_checkpoints_and_evaluations_follow_their_periods_and_the_last_iteration_is_final() -> None:
    run = stand_in_run(start=2, max_iters=9, checkpoint_period=3, eval_period=2)
    saved, evaluated = [], []
    checkpointer, evaluator = PeriodicCheckpointer(run), PeriodicEvaluator(run, MetricsLog(Path("unused")))
    checkpointer.save = lambda name, iteration: saved.append((name, iteration))
    evaluator.evaluate = evaluated.append
    BatchValueLoop(run, [checkpointer, evaluator]).train()
    # Resumed at 2: periodic work at 3 and 6 (checkpoints), 4, 6 and 8 (evaluations); at 9, the last, only the
    # final ones, though 9 is a multiple of the checkpoint period.
    assert saved == [("model_0000003.pt", 3), ("model_0000006.pt", 6), ("model_final.pt", 9)]
    assert evaluated == [4, 6, 8, 9]
    run.config.solver.max_iters = 8
    saved.clear(), evaluated.clear()
    BatchValueLoop(run, [checkpointer, evaluator]).train()
    assert evaluated == [4, 6, 8]  # 8 evaluated once, as the final evaluation
    off = stand_in_run(start=0, max_iters=3)
    saved.clear()
    checkpointer.run = off
    BatchValueLoop(off, [checkpointer]).train()
    assert saved == [("model_final.pt", 3)]  # period 0: only the final checkpoint


def test_metrics_lines_every_log_period_and_at_the_end(tmp_path: Path) -> None:
    run = stand_in_run(start=0, max_iters=5, log_period=2)
    logger = MetricsLogger(run, MetricsLog(tmp_path))
    BatchValueLoop(run, [logger]).train()
    lines = MetricsLog(tmp_path).records()
    assert [(r["iter"], r["loss"], r["grad_norm"], r["lr"]) for r in lines] == [
        (2, 2.0, 1.0, 0.25), (4, 4.0, 1.0, 0.25), (5, 5.0, 1.0, 0.25)]
    assert all(r["time"] >= r["data_time"] >= 0 for r in lines)
    assert logger.latest == lines[-1]

    # A non-finite loss stops training at the first line that would log it; other ranks write no lines.
    worker = stand_in_run(start=0, max_iters=4, log_period=2)
    worker.context.is_main = False
    worker.loader[1] = (float("nan"), [])
    with pytest.raises(FloatingPointError, match="loss became nan at iteration 2"):
        BatchValueLoop(worker, [MetricsLogger(worker, MetricsLog(tmp_path / "worker"))]).train()
    assert not (tmp_path / "worker").exists()


@pytest.fixture(scope="module")
def tiny_run_config(tmp_path_factory: pytest.TempPathFactory) -> TrainConfig:
    root = tmp_path_factory.mktemp("hooks")
    write_dataset(root / "data", 2, "train", size=(64, 128), seed=0)
    write_dataset(root / "data", 1, "val", size=(64, 128), seed=0)
    (root / "tiny.yaml").write_text(yaml.safe_dump(TINY_MODEL))
    return TrainConfig.from_dict({
        "model": str(root / "tiny.yaml"), "seed": 0, "best_metric": "miou",
        "data": {"root": str(root / "data"), "crop_size": [64, 128], "num_workers": 0, "val_split": "val"},
        "solver": {"batch_size": 2, "max_iters": 10, "amp": False},
    })


def test_best_weights_keep_the_first_of_the_best_scores(tmp_path: Path, tiny_run_config: TrainConfig) -> None:
    run = build_training_run(tiny_run_config, tmp_path)
    best = BestWeights(run, MetricsLog(tmp_path))
    best.before_train()
    assert best.best is None  # no log yet
    marker = next(run.model.parameters())

    def evaluation(iteration: int, miou: float | None) -> None:
        with torch.no_grad():
            marker.fill_(iteration)  # the weights of this iteration
        best.consider(iteration, {"miou": miou, "pq": 50.0})

    for iteration, miou in ((2, 5.0), (4, 7.0), (6, 7.0), (8, None), (10, 6.0)):
        evaluation(iteration, miou)
    kept = read_checkpoint(tmp_path / BEST_CHECKPOINT)
    assert best.best == kept.extra == {"iteration": 4, "metric": "miou", "score": 7.0}
    name = next(n for n, _ in run.model.named_parameters())
    assert torch.all(kept.state_dict[name] == 4)  # written at 4, not rewritten by the tie at 6

    # A resumed run starts from the best evaluation in its log: a lower score writes nothing.
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    MetricsLog(resumed).append({"iter": 2, "eval": {"miou": 9.0}})
    run.out_dir = resumed
    best = BestWeights(run, MetricsLog(resumed))
    best.before_train()
    evaluation(4, 8.0)
    assert best.best == {"iteration": 2, "metric": "miou", "score": 9.0}
    assert not (resumed / BEST_CHECKPOINT).exists()


def test_standard_hooks_order(tmp_path: Path, tiny_run_config: TrainConfig) -> None:
    hooks, evaluator, best = standard_hooks(build_training_run(tiny_run_config, tmp_path))
    assert [type(h).__name__ for h in hooks] == [
        "MetricsLogger", "ProgressBar", "PeriodicCheckpointer", "PeriodicEvaluator", "BestWeights"]
    assert hooks[3] is evaluator and hooks[4] is best and evaluator.on_report == [best.consider]
