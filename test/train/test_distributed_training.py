"""Data-parallel training with two CPU processes (gloo): synchronized BatchNorm, sharded data, DDP via torchrun."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from torch import nn

from ros_seg.data.synthetic_scenes import write_dataset
from ros_seg.train.distributed import ShardedBatchSampler
from ros_seg.train.sync_batch_norm import ProcessGroupBatchNorm2d, convert_to_process_group_batchnorm

from tiny_model import TINY_MODEL

# Runs in every process: train, then save this rank's weights for the comparison.
WORKER = """
import sys
from pathlib import Path
import torch
from ros_seg.train.distributed import shutdown_distributed
from ros_seg.train.train_config import TrainConfig
from ros_seg.train.trainer import run_training
from ros_seg.train.training_run import build_training_run

config, out = TrainConfig.from_yaml(sys.argv[1]), Path(sys.argv[2])
run = build_training_run(config, out, device="cpu")
run_training(run)
norms = sorted({type(m).__name__ for m in run.model.modules() if "BatchNorm" in type(m).__name__})
torch.save({"state": {k: v.detach() for k, v in run.model.state_dict().items()}, "norms": norms},
           out / f"rank{run.context.rank}.pt")
shutdown_distributed()
"""



def _synced_batchnorm_worker(rank: int, init_file: str, out_dir: str) -> None:
    """Process `rank` of 2: its half of a batch through a ProcessGroupBatchNorm2d; saves outputs and gradients."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    torch.manual_seed(0)
    x = (torch.randn(4, 3, 5, 6) * 2 + 1)[rank * 2 : rank * 2 + 2].requires_grad_()
    norm = convert_to_process_group_batchnorm(nn.Sequential(nn.BatchNorm2d(3)))[0]
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        norm.bias.copy_(torch.tensor([0.0, -1.0, 3.0]))
    y = norm(x)
    (y * torch.arange(y.numel()).view_as(y).sin()).sum().backward()
    torch.save({"y": y.detach(), "x_grad": x.grad, "w_grad": norm.weight.grad, "mean": norm.running_mean,
                "var": norm.running_var, "type": type(norm).__name__}, f"{out_dir}/bn{rank}.pt")
    dist.destroy_process_group()


def test_process_group_batchnorm_equals_batchnorm_over_the_whole_batch(tmp_path: Path) -> None:
    mp.spawn(_synced_batchnorm_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    parts = [torch.load(tmp_path / f"bn{r}.pt", weights_only=True) for r in range(2)]
    assert parts[0]["type"] == ProcessGroupBatchNorm2d.__name__
    torch.manual_seed(0)
    x = (torch.randn(4, 3, 5, 6) * 2 + 1).requires_grad_()
    norm = nn.BatchNorm2d(3)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        norm.bias.copy_(torch.tensor([0.0, -1.0, 3.0]))
    y = norm(x)
    # One process sees half of the loss: the sum over processes of its weight gradients is the full gradient.
    for r in range(2):
        half = y[r * 2 : r * 2 + 2]
        (half * torch.arange(half.numel()).view_as(half).sin()).sum().backward(retain_graph=True)
    assert torch.allclose(torch.cat([p["y"] for p in parts]), y, atol=1e-5)
    assert torch.allclose(torch.cat([p["x_grad"] for p in parts]), x.grad, atol=1e-5)
    assert torch.allclose(parts[0]["w_grad"] + parts[1]["w_grad"], norm.weight.grad, atol=1e-4)
    for p in parts:
        assert torch.allclose(p["mean"], norm.running_mean, atol=1e-6)
        assert torch.allclose(p["var"], norm.running_var, atol=1e-5)


def test_sharded_sampler_splits_epochs_between_processes_and_resumes() -> None:
    ranks = [ShardedBatchSampler(10, 2, seed=3, rank=r, world_size=2) for r in range(2)]
    streams = [iter(s) for s in ranks]
    first_epoch = [next(stream) + next(stream) for stream in streams]  # 2 batches of 2 per rank and epoch
    indices = [i for batch in first_epoch for _, i in batch]
    assert len(set(indices)) == 8 and all(epoch == 0 for batch in first_epoch for epoch, _ in batch)
    assert next(streams[0])[0][0] == 1  # then epoch 1
    later = ShardedBatchSampler(10, 2, seed=3, rank=0, world_size=2, start_iteration=3)
    reference = iter(ShardedBatchSampler(10, 2, seed=3, rank=0, world_size=2))
    for _ in range(3):
        next(reference)
    assert next(iter(later)) == next(reference)
    with pytest.raises(ValueError, match="fewer than one batch"):
        ShardedBatchSampler(3, 2, seed=0, world_size=2)


@pytest.mark.slow
def test_two_cpu_processes_end_with_identical_weights(tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    if not Path(torchrun).is_file():
        pytest.skip("torchrun is not installed")
    write_dataset(tmp_path / "data", 4, "train", size=(64, 128), seed=0)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY_MODEL))
    config = {
        "model": str(tmp_path / "tiny.yaml"),
        "seed": 5,
        "eval_period": 0,
        "checkpoint_period": 0,
        "log_period": 1,
        "data": {"root": str(tmp_path / "data"), "crop_size": [64, 128], "num_workers": 0, "val_split": None},
        "solver": {"batch_size": 4, "max_iters": 4, "base_lr": 0.001, "amp": False},
        "loss": {"num_points": 256},
    }
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "worker.py").write_text(WORKER)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", str(tmp_path / "worker.py"),
         str(tmp_path / "train.yaml"), str(out)],
        env=env, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]
    final = out / "model_final.pt"
    assert final.is_file()
    # Weights and BatchNorm statistics (synchronized across the processes) are identical.
    assert ranks[0]["norms"] == ["ProcessGroupBatchNorm2d"]
    for name, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][name]), name
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in log] == [1, 2, 3, 4]
    checkpoint = torch.load(final, weights_only=True)
    assert checkpoint["extra"]["data_position"]["world_size"] == 2
    assert len(checkpoint["extra"]["rng"]) == 2
