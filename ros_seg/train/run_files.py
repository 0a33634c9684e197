"""The output folder of a training run: its file names, the `last_checkpoint` pointer, atomic text writes.

OUT holds `train_config.json` (the configuration of the latest start),
`metrics.jsonl` (see `ros_seg.train.metrics_log`), `model_{iteration:07d}.pt`
periodic checkpoints, `model_final.pt`, `model_best.pt` (with best_metric) and
`last_checkpoint`, one line naming the newest checkpoint, which `--resume`
continues from.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ros_seg.train.train_config import TrainConfig

LOG_FILE = "metrics.jsonl"
LAST_CHECKPOINT = "last_checkpoint"
FINAL_CHECKPOINT = "model_final.pt"
BEST_CHECKPOINT = "model_best.pt"
CONFIG_FILE = "train_config.json"


def checkpoint_name(iteration: int) -> str:
    """File name of the periodic checkpoint after `iteration` iterations."""
    return f"model_{iteration:07d}.pt"


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The checkpoint `out_dir/last_checkpoint` names, or None when there is none."""
    pointer = Path(out_dir) / LAST_CHECKPOINT
    if not pointer.is_file():
        return None
    return Path(out_dir) / pointer.read_text().strip()


def atomic_write_text(path: Path, text: str) -> None:
    """Replace `path` with `text` in one step: a reader sees the old file or the new one, never a part."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def point_last_checkpoint_at(out_dir: Path, name: str) -> None:
    """Make `out_dir/last_checkpoint` name the checkpoint file `name` (in `out_dir`)."""
    atomic_write_text(Path(out_dir) / LAST_CHECKPOINT, name + "\n")


def write_train_config(out_dir: Path, config: TrainConfig) -> None:
    """Create `out_dir` if needed and record `config` in it as train_config.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / CONFIG_FILE, json.dumps(config.to_dict(), indent=2) + "\n")
