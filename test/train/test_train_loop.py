"""The training loop on tiny synthetic data: loss falls, checkpoints are complete, kill-and-resume is exact."""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import re
import resource
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from ros_seg.cli import eval as eval_cli
from ros_seg.cli import train as train_cli
from ros_seg.data.synthetic_scenes import write_dataset
from ros_seg.models.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from ros_seg.models.load import load_model
from ros_seg.models.strict_config import ConfigError
from ros_seg.train import mixed_precision
from ros_seg.train.hooks import best_evaluation
from ros_seg.train.metrics_log import MetricsLog
from ros_seg.train.run_files import CONFIG_FILE, LAST_CHECKPOINT, LOG_FILE
from ros_seg.train.train_config import TrainConfig
from ros_seg.train.trainer import run_training, train
from ros_seg.train.training_run import build_training_run

from repo_paths import REPO_ROOT
from tiny_model import TINY_MODEL

SIZE = (64, 128)
# A small decoder on the real STDC1 backbone keeps each iteration around a tenth of a second.
COMMAND = (
    "import argparse, sys\n"
    "from ros_seg.cli import train\n"
    "parser = argparse.ArgumentParser()\n"
    "train.register(parser.add_subparsers())\n"
    "args = parser.parse_args(sys.argv[1:])\n"
    "sys.exit(args.func(args))\n"
)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("train")
    write_dataset(root / "data", 4, "train", size=SIZE, seed=0)
    write_dataset(root / "data", 2, "val", size=SIZE, seed=0)
    (root / "tiny.yaml").write_text(yaml.safe_dump(TINY_MODEL))
    return root


def write_config(root: Path, name: str, **overrides: dict) -> Path:
    config = {
        "model": str(root / "tiny.yaml"),
        "seed": 1,
        "eval_period": 0,
        "checkpoint_period": 0,
        "log_period": 1,
        "data": {"root": str(root / "data"), "crop_size": list(SIZE), "scale_range": [0.9, 1.1],
                 "num_workers": 0, "val_split": None},
        "solver": {"batch_size": 2, "max_iters": 8, "base_lr": 0.0005, "schedule": "cosine", "warmup_iters": 2,
                   "warmup_factor": 0.1, "clip_grad_norm": 0.01, "amp": False},
        "loss": {"num_points": 256},
    }
    for section, values in overrides.items():
        if isinstance(values, dict):
            config[section].update(values)
        else:
            config[section] = values
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / LOG_FILE).read_text().splitlines() if line.strip()]


def start_training(config: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", COMMAND, "train", "--config", str(config), "--out", str(out), "--device", "cpu", *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output[-3000:]
    return output


def test_loss_falls_and_checkpoints_are_complete(workspace: Path) -> None:
    config = TrainConfig.from_yaml(write_config(
        workspace, "fit", eval_period=0, checkpoint_period=10,
        data={"val_split": "val", "eval_size": list(SIZE), "scale_range": [1.0, 1.0], "flip_probability": 0.0,
              "color_jitter": False},
        solver={"max_iters": 20, "base_lr": 0.001, "warmup_iters": 0, "warmup_factor": 1.0},
    ))
    out = workspace / "fit"
    result = train(config, out, device="cpu")
    losses = [r["loss"] for r in read_log(out) if "loss" in r]
    assert len(losses) == 20
    assert sum(losses[-4:]) / 4 < 0.8 * sum(losses[:4]) / 4, losses
    record = read_log(out)[0]
    assert {"iter", "loss", "loss_ce", "loss_mask", "loss_dice", "loss_ce_0", "lr", "time", "data_time"} <= set(record)

    # Checkpoints: written atomically (no temporary files), complete, loadable by the inference tools.
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [LAST_CHECKPOINT, LOG_FILE, "model_0000010.pt", "model_final.pt", "train_config.json"])
    assert (out / LAST_CHECKPOINT).read_text().strip() == "model_final.pt"
    checkpoint = read_checkpoint(out / "model_0000010.pt")
    extra = checkpoint.extra
    assert {"iteration", "optimizer", "scheduler", "scaler", "rng", "data_position"} <= set(extra)
    assert extra["iteration"] == 10
    assert extra["scheduler"]["last_epoch"] == 10
    assert len(extra["optimizer"]["state"]) == sum(1 for p in load_model(weights=out / "model_final.pt")
                                                   .model.parameters())
    assert set(extra["rng"][0]) == {"torch", "cuda", "numpy", "python"}
    assert extra["data_position"] == {"epoch": 5, "batch": 0, "world_size": 1}
    assert checkpoint.config.name == "pem_stdc1_tiny"

    # The run evaluated at the end, with every accuracy key.
    report = result["eval"]
    assert report["images"] == 2
    assert {"miou", "per_class_iou", "pq", "sq", "rq", "pq_things", "pq_stuff"} <= set(report)
    assert read_log(out)[-1]["eval"]["miou"] == report["miou"]


def test_mixed_precision_on_cpus_with_bf16_instructions(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setattr(mixed_precision, "cpu_computes_bf16", lambda: False)
    assert mixed_precision.autocast_precision(cpu, amp=True)[0] is False  # emulated bf16 would only cost time
    monkeypatch.setattr(mixed_precision, "cpu_computes_bf16", lambda: True)
    assert mixed_precision.autocast_precision(cpu, amp=True) == (True, torch.bfloat16)
    assert mixed_precision.autocast_precision(cpu, amp=False)[0] is False


def test_cpu_bf16_training_runs_the_model_in_bf16_and_learns(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Forced on (PyTorch emulates bf16 where the CPU lacks the instructions): the step is the same code.
    monkeypatch.setattr(mixed_precision, "cpu_computes_bf16", lambda: True)
    config = TrainConfig.from_yaml(write_config(
        workspace, "bf16", data={"scale_range": [1.0, 1.0], "flip_probability": 0.0, "color_jitter": False},
        solver={"max_iters": 20, "base_lr": 0.001, "warmup_iters": 0, "warmup_factor": 1.0, "amp": True},
    ))
    run = build_training_run(config, workspace / "bf16")
    seen: set[torch.dtype] = set()
    run.model.backbone.register_forward_hook(lambda module, inputs, output: seen.update(
        t.dtype for t in (output.values() if isinstance(output, dict) else output)))
    run_training(run)
    assert seen == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in run.model.parameters())  # fp32 master weights
    losses = [r["loss"] for r in read_log(workspace / "bf16") if "loss" in r]
    assert len(losses) == 20 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-4:]) / 4 < 0.8 * sum(losses[:4]) / 4, losses


def test_eval_command_writes_json_and_markdown(workspace: Path, capsys: pytest.CaptureFixture) -> None:
    weights = workspace / "fit" / "model_final.pt"
    if not weights.is_file():
        pytest.skip("needs the checkpoint of test_loss_falls_and_checkpoints_are_complete")
    parser = argparse.ArgumentParser()
    eval_cli.register(parser.add_subparsers())
    report_path = workspace / "report" / "eval.json"
    report_path.parent.mkdir(exist_ok=True)  # --json OUT names a file in an existing folder
    args = parser.parse_args(["eval", "--model", str(workspace / "tiny.yaml"), "--weights", str(weights),
                              "--data", str(workspace / "data"), "--json", str(report_path), "--size", "64x128"])
    assert args.func(args) == 0
    report = json.loads(report_path.read_text(), parse_constant=lambda name: pytest.fail(f"{name} in eval.json"))
    assert {"miou", "per_class_iou", "pq", "sq", "rq", "pq_things", "pq_stuff"} <= set(report)
    assert set(report["per_class_iou"]) >= {"road", "car", "person"}
    assert report["miou"] is not None and 0.0 <= report["miou"] <= 100.0
    assert set(report["per_class_pq"]) <= set(report["per_class_iou"])
    for scores in report["per_class_pq"].values():
        assert {"pq", "sq", "rq", "tp", "fp", "fn"} == set(scores)
    for name, mistakes in report["confused_with"].items():
        assert all(other != name and 0.0 < share <= 100.0 for other, share in mistakes)
    # The thing segments by area are the things' matched (TP) and missed (FN) segments, binned.
    things = {"person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"}
    thing_scores = [scores for name, scores in report["per_class_pq"].items() if name in things]
    by_area = report["things_by_area"]
    assert sum(row["segments"] for row in by_area) == sum(s["tp"] + s["fn"] for s in thing_scores) > 0
    assert sum(row["matched"] for row in by_area) == sum(s["tp"] for s in thing_scores)
    markdown = report_path.with_suffix(".md").read_text()
    assert "| miou |" in markdown and "| road |" in markdown
    assert "| class | IoU (%) | PQ | SQ | RQ | TP | FP | FN | its pixels most often predicted as |" in markdown
    assert "| area | segments | matched | recall (%) |" in markdown and "| < 64 px |" in markdown
    assert "| pq |" in capsys.readouterr().out


def test_kill_and_resume_reproduces_the_uninterrupted_run(workspace: Path) -> None:
    config = write_config(workspace, "resume", checkpoint_period=4, solver={"max_iters": 8})
    reference, interrupted = workspace / "reference", workspace / "interrupted"
    uninterrupted_run = start_training(config, reference)
    killed_run = start_training(config, interrupted)

    # Kill the second run as soon as its mid-way checkpoint is in place.
    pointer = interrupted / LAST_CHECKPOINT
    deadline = time.monotonic() + 120
    while not pointer.is_file() and killed_run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    killed_run.send_signal(signal.SIGKILL)
    killed_run.communicate(timeout=30)
    assert pointer.read_text().strip() == "model_0000004.pt", "the run ended before it could be killed"
    assert not (interrupted / "model_final.pt").exists()
    finish(uninterrupted_run)
    with open(interrupted / LOG_FILE, "a") as log_file:
        log_file.write('{"iter": 5, "loss_ce": 0.')  # as a kill while a line is written leaves the log

    finish(start_training(config, interrupted, "--resume"))
    expected = {r["iter"]: r for r in read_log(reference)}
    resumed = {r["iter"]: r for r in read_log(interrupted)}
    assert sorted(resumed) == sorted(expected) == list(range(1, 9))
    for iteration in range(5, 9):
        for key in ("loss", "loss_ce", "loss_mask", "loss_dice", "loss_dice_1", "lr", "grad_norm"):
            assert resumed[iteration][key] == pytest.approx(expected[iteration][key], rel=1e-6, abs=1e-6), (
                iteration, key)

    # Weights, optimizer and scheduler states after resuming equal the uninterrupted run's.
    a, b = read_checkpoint(reference / "model_final.pt"), read_checkpoint(interrupted / "model_final.pt")
    for name, tensor in a.state_dict.items():
        assert torch.allclose(tensor.float(), b.state_dict[name].float(), atol=1e-6), name
    assert a.extra["scheduler"] == b.extra["scheduler"]
    for index, state in a.extra["optimizer"]["state"].items():
        other = b.extra["optimizer"]["state"][index]
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.allclose(state[key], other[key], atol=1e-6), (index, key)


def _file_size_limit(limit: int) -> None:
    """In a child process: files may not grow past `limit` bytes; a write past it fails with EFBIG (SIGXFSZ,
    which would kill the process instead, ignored), a real OS-level failure of the write."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def test_a_checkpoint_that_cannot_be_written_ends_training_with_one_line(workspace: Path) -> None:
    config = write_config(workspace, "no_room", checkpoint_period=2, solver={"max_iters": 4})
    out = workspace / "no_room"
    process = subprocess.run(
        [sys.executable, "-m", "ros_seg.cli", "train", "--config", str(config), "--out", str(out), "--device", "cpu"],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=120,
        preexec_fn=functools.partial(_file_size_limit, 4 << 20),
    )
    assert process.returncode == 2, process.stderr[-3000:]
    assert "Traceback" not in process.stderr
    last = process.stderr.strip().splitlines()[-1]
    assert re.fullmatch(rf"ros-seg train: error: cannot write checkpoint {re.escape(str(out))}/model_0000002\.pt: "
                        r"it needs about \d+\.\d MiB, more than this process's file size limit allows \(ulimit -f\)",
                        last), last
    assert not list(out.glob(".*.tmp")) and not list(out.glob("*.pt"))


def test_resume_and_fresh_runs_check_the_output_folder(workspace: Path) -> None:
    config = TrainConfig.from_yaml(write_config(workspace, "guards"))
    with pytest.raises(ValueError, match="nothing to resume"):
        train(config, workspace / "empty_out", resume=True)
    (workspace / "used_out").mkdir()
    (workspace / "used_out" / LAST_CHECKPOINT).write_text("model_final.pt\n")
    with pytest.raises(ValueError, match="--resume"):
        train(config, workspace / "used_out")


def test_init_weights_start_a_new_run_from_a_checkpoint(workspace: Path) -> None:
    source = workspace / "init_source"
    train(TrainConfig.from_yaml(write_config(workspace, "init_source", solver={"max_iters": 2})), source)
    checkpoint = read_checkpoint(source / "model_final.pt")
    config = TrainConfig.from_yaml(write_config(workspace, "init_target", init_weights=str(source / "model_final.pt")))

    run = build_training_run(config, workspace / "init_target")
    assert run.start_iteration == 0 and run.scheduler.last_epoch == 0
    assert not run.optimizer.state  # fresh optimizer moments
    for name, tensor in run.model.state_dict().items():
        assert torch.equal(tensor.float(), checkpoint.state_dict[name].float()), name

    # A checkpoint of the same architecture on another label set is refused, naming both.
    other = replace(checkpoint.metadata, names=tuple(f"class{i}" for i in range(len(checkpoint.metadata.names))))
    save_checkpoint(workspace / "other_classes.pt", run.model, checkpoint.config, other)
    with pytest.raises(ValueError, match=r"other classes.*class0.*same label set"):
        build_training_run(replace(config, init_weights=str(workspace / "other_classes.pt")), workspace / "x")
    # Weights of another architecture: every mis-shaped tensor is listed.
    wide = yaml.safe_load((workspace / "tiny.yaml").read_text())
    wide["transformer_decoder"]["hidden_dim"] = 32
    (workspace / "tiny_wide.yaml").write_text(yaml.safe_dump(wide))
    wide_config = TrainConfig.from_yaml(write_config(workspace, "wide", model=str(workspace / "tiny_wide.yaml")))
    unfit = r"init_weights .*model_final\.pt do not fit the model: .*mis-shaped tensors"  # after any unexpected ones
    with pytest.raises(CheckpointError, match=unfit):
        build_training_run(replace(wide_config, init_weights=str(source / "model_final.pt")), workspace / "y")
    with pytest.raises(CheckpointError, match="missing.pt does not exist"):
        build_training_run(replace(config, init_weights=str(workspace / "missing.pt")), workspace / "z")


def test_train_command_init_weights_and_resume_exclude_each_other(workspace: Path) -> None:
    parser = argparse.ArgumentParser()
    train_cli.register(parser.add_subparsers())
    args = parser.parse_args(["train", "--config", str(write_config(workspace, "both")), "--out",
                              str(workspace / "both"), "--resume", "--init-weights", str(workspace / "a.pt")])
    with pytest.raises(ValueError, match="give only one of them"):
        args.func(args)


def test_train_command_seed_overrides_the_config(workspace: Path) -> None:
    parser = argparse.ArgumentParser()
    train_cli.register(parser.add_subparsers())
    config = write_config(workspace, "seeded", solver={"max_iters": 2})

    def run(out: str, *extra: str) -> list[float]:
        args = parser.parse_args(["train", "--config", str(config), "--out", str(workspace / out), "--device", "cpu",
                                  *extra])
        assert args.func(args) == 0
        return [record["loss"] for record in read_log(workspace / out) if "loss" in record]

    with_seed_3 = run("seed3", "--seed", "3")
    assert json.loads((workspace / "seed3" / CONFIG_FILE).read_text())["seed"] == 3
    assert run("seed3_again", "--seed", "3") == with_seed_3  # the seed fixes weights, data order and augmentation
    assert run("config_seed") != with_seed_3  # the config's seed 1 gives another run
    with pytest.raises(ValueError, match="--seed must be 0 or more, got -1"):
        run("negative", "--seed", "-1")


def test_train_command_rejects_unknown_config_keys(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: pem_stdc1\nsolver:\n  learning_rate: 0.1\n")
    parser = argparse.ArgumentParser()
    train_cli.register(parser.add_subparsers())
    args = parser.parse_args(["train", "--config", str(bad), "--data", str(tmp_path), "--out", str(tmp_path / "o")])
    with pytest.raises(ConfigError, match=r"learning_rate.*solver.*bad\.yaml"):
        args.func(args)


@pytest.mark.parametrize(
    "name", sorted(p.stem for p in (REPO_ROOT / "config" / "train").glob("*.yaml"))
)
def test_shipped_training_configs_load(name: str) -> None:
    config = TrainConfig.from_yaml(REPO_ROOT / "config" / "train" / f"{name}.yaml")
    assert config.loss.num_points > 0 and config.solver.max_iters > 0


# Small Mask2Former (deformable-attention encoder) and PRO-SCALE models on the STDC1 backbone.
TINY_ENCODER_MODELS = {
    "m2f": {"name": "msdeformattn", "encoder_layers": 1},
    "proscale": {"name": "proscale", "proscale_layers": [1, 1, 1], "lpe": True, "trc": True},
}


@pytest.mark.parametrize("variant", sorted(TINY_ENCODER_MODELS))
def test_loss_falls_for_deformable_encoder_models(workspace: Path, variant: str) -> None:
    model = {
        "name": f"{variant}_tiny",
        "backbone": {"name": "stdc1"},
        "pixel_decoder": {"conv_dim": 64, "mask_dim": 64, "num_heads": 4, "num_points": 2, "ffn_dim": 128,
                          **TINY_ENCODER_MODELS[variant]},
        "transformer_decoder": {"name": "masked", "hidden_dim": 64, "num_queries": 12, "num_heads": 4,
                                "dim_feedforward": 128, "num_layers": 3, "pre_norm": False,
                                "cross_attention": "masked"},
    }
    (workspace / f"{variant}.yaml").write_text(yaml.safe_dump(model))
    config = TrainConfig.from_yaml(write_config(
        workspace, f"fit_{variant}", model=str(workspace / f"{variant}.yaml"),
        data={"scale_range": [1.0, 1.0], "flip_probability": 0.0, "color_jitter": False},
        solver={"max_iters": 16, "base_lr": 0.001, "warmup_iters": 0, "warmup_factor": 1.0},
    ))
    out = workspace / f"fit_{variant}"
    train(config, out, device="cpu")
    losses = [r["loss"] for r in read_log(out) if "loss" in r]
    assert sum(losses[-4:]) / 4 < 0.8 * sum(losses[:4]) / 4, losses
    assert load_model(weights=out / "model_final.pt").config.pixel_decoder.name == TINY_ENCODER_MODELS[variant]["name"]


def test_best_metric_keeps_the_best_evaluation_across_a_resume(workspace: Path) -> None:
    config = write_config(workspace, "best", best_metric="miou", eval_period=2, checkpoint_period=2, keep_checkpoints=1,
                          data={"val_split": "val", "eval_size": list(SIZE)}, solver={"max_iters": 4})
    out = workspace / "best"
    first = train(TrainConfig.from_yaml(config), out, max_iters=4)
    (out / ".model_0000006.pt.k1ll3d.tmp").write_bytes(b"PK\x03\x04")  # a save cut short by a kill: removed
    result = train(TrainConfig.from_yaml(config), out, resume=True, max_iters=8)
    scores = {r["iter"]: r["eval"]["miou"] for r in read_log(out) if "eval" in r}
    assert sorted(scores) == [2, 4, 6, 8]
    # The hooks' order shows in the log (an iteration's loss line, then its evaluation) and in the files: the
    # first run ended with model_final.pt at 4 (no periodic checkpoint there), the resumed one wrote one at 6,
    # which replaced the one of 2 (keep_checkpoints: 1).
    assert [(r["iter"], "eval" in r) for r in read_log(out)] == [
        (1, False), (2, False), (2, True), (3, False), (4, False), (4, True),
        (5, False), (6, False), (6, True), (7, False), (8, False), (8, True)]
    assert sorted(p.name for p in out.iterdir()) == sorted([
        CONFIG_FILE, LAST_CHECKPOINT, LOG_FILE, "model_0000006.pt", "model_best.pt", "model_final.pt"])
    best_iteration = max(scores, key=lambda i: (scores[i], -i))  # the first of equal scores
    assert result["best"] == {"checkpoint": str(out / "model_best.pt"), "iteration": best_iteration,
                              "metric": "miou", "score": scores[best_iteration]}
    assert first["best"]["iteration"] in (2, 4)
    best = read_checkpoint(out / "model_best.pt")
    assert best.extra == {"iteration": best_iteration, "metric": "miou", "score": scores[best_iteration]}
    if best_iteration == 8:
        final = read_checkpoint(out / "model_final.pt")
        assert all(torch.equal(t, final.state_dict[k]) for k, t in best.state_dict.items())
    assert load_model(weights=out / "model_best.pt").model is not None
    # A resumed run starts from the best evaluation in its log (null scores and loss lines skipped).
    logged = workspace / "best_from_log"
    logged.mkdir()
    (logged / LOG_FILE).write_text("".join(json.dumps(r) + "\n" for r in (
        {"iter": 2, "eval": {"miou": 5.0}}, {"iter": 3, "loss": 9.0}, {"iter": 4, "eval": {"miou": 7.0}},
        {"iter": 6, "eval": {"miou": 7.0}}, {"iter": 8, "eval": {"miou": None}})))
    assert best_evaluation(MetricsLog(logged).records(), "miou") == {"iteration": 4, "metric": "miou", "score": 7.0}

    with pytest.raises(ConfigError, match=r"'best_metric' .* must be null or one of .*'miou', 'pq'.*, got 'loss'"):
        TrainConfig.from_yaml(write_config(workspace, "bad_best", best_metric="loss"))
    with pytest.raises(ConfigError, match="'best_metric' .* must be null when data.val_split is null"):
        TrainConfig.from_yaml(write_config(workspace, "no_val_best", best_metric="pq"))
    with pytest.raises(ConfigError, match="'best_metric' .* must be miou when data.task is semantic"):
        TrainConfig.from_yaml(write_config(workspace, "semantic_best", best_metric="pq",
                                           data={"val_split": "val", "task": "semantic"}))
