"""Training speed: iterations per second of the real trainer, and whether data loading keeps up.

Runs `Trainer` on generated Cityscapes-layout scenes at the crop size asked
for (no evaluation, no intermediate checkpoints) and reads its own per-iteration
log: `time` is the whole iteration, `data_time` the wait for the next batch, so
the loader share is data_time / time after the warm-up iterations.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from ros_seg.data.synthetic_scenes import write_dataset
from ros_seg.eval.machine_info import machine_info
from ros_seg.train.mixed_precision import autocast_precision
from ros_seg.train.run_files import LOG_FILE
from ros_seg.train.train_config import DataConfig, SolverConfig, TrainConfig
from ros_seg.train.trainer import train


def _autocast_name(device: str) -> str:
    """The precision the trainer's autocast (solver.amp on) runs the model in on `device`."""
    enabled, dtype = autocast_precision(torch.device(device), amp=True)
    return str(dtype).removeprefix("torch.") if enabled else "off (fp32)"


def bench_training(
    model: str = "pem_stdc1",
    size: tuple[int, int] = (512, 1024),
    batch_size: int = 2,
    warmup: int = 2,
    repeats: int = 6,
    device: str = "cpu",
    num_workers: int = 2,
) -> dict:
    """Train `warmup + repeats` iterations with crops of `size`; report the timed iterations."""
    with tempfile.TemporaryDirectory(prefix="ros_seg_train_bench_") as tmp:
        data = Path(tmp) / "data"
        write_dataset(data, n=max(4, 2 * batch_size), split="train", size=size, seed=0)
        config = TrainConfig(
            model=model,
            eval_period=0,
            checkpoint_period=0,
            log_period=1,
            data=DataConfig(root=str(data), val_split=None, crop_size=list(size), num_workers=num_workers),
            solver=SolverConfig(batch_size=batch_size, max_iters=warmup + repeats),
        )
        train(config, Path(tmp) / "run", device=device)
        log = [json.loads(line) for line in (Path(tmp) / "run" / LOG_FILE).read_text().splitlines()]
    steps = [entry for entry in log if "time" in entry][warmup:]
    step_s = float(np.mean([e["time"] for e in steps]))
    data_s = float(np.mean([e["data_time"] for e in steps]))
    return {
        "op": "train",
        "model": model,
        "device": device,
        "crop_size": list(size),
        "batch_size": batch_size,
        "num_workers": num_workers,
        "autocast": _autocast_name(device),
        "iterations_timed": len(steps),
        "step_s": round(step_s, 3),
        "iterations_per_s": round(1.0 / step_s, 3),
        "data_time_s": round(data_s, 4),
        "loader_share": round(data_s / step_s, 4),
        "machine": machine_info(),
    }
