"""The output folder of a training run: its file names, the `last_checkpoint` pointer, atomic text writes.

OUT holds `train_config.json` (the configuration of the latest start),
`metrics.jsonl` (see `ros_seg.train.metrics_log`), `model_{iteration:07d}.pt`
periodic checkpoints, `model_final.pt`, `model_best.pt` (with best_metric) and
`last_checkpoint`, one line naming the newest checkpoint, which `--resume`
continues from. Files are replaced atomically through temporary files named
`.NAME[.XXXXXXXX].tmp` next to them; a run killed while writing one leaves it
behind, and the next start in the folder removes it.
"""
from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

from ros_seg.train.train_config import TrainConfig

LOG_FILE = "metrics.jsonl"
LAST_CHECKPOINT = "last_checkpoint"
FINAL_CHECKPOINT = "model_final.pt"
BEST_CHECKPOINT = "model_best.pt"
CONFIG_FILE = "train_config.json"
TEMPORARY_PATTERN = ".*.tmp"
"""Temporary files of atomic writes (atomic_write_text here, ros_seg.models.checkpoint.atomic_torch_save)."""
PERIODIC_CHECKPOINT = re.compile(r"model_(\d{7})\.pt")

log = logging.getLogger(__name__)


def checkpoint_name(iteration: int) -> str:
    """File name of the periodic checkpoint after `iteration` iterations."""
    return f"model_{iteration:07d}.pt"


def periodic_checkpoints(out_dir: Path) -> list[Path]:
    """The periodic checkpoints `model_NNNNNNN.pt` in `out_dir`, oldest iteration first."""
    found = [p for p in Path(out_dir).glob("model_*.pt") if PERIODIC_CHECKPOINT.fullmatch(p.name)]
    return sorted(found, key=lambda p: p.name)


def remove_old_checkpoints(out_dir: Path, keep: int) -> None:
    """Delete all but the newest `keep` periodic checkpoints of `out_dir` (keep 0: delete none)."""
    if keep <= 0:
        return
    for old in periodic_checkpoints(out_dir)[:-keep]:
        old.unlink(missing_ok=True)
        log.info("removed %s (keep_checkpoints: %d)", old, keep)


def remove_temporary_files(out_dir: Path) -> None:
    """Delete the temporary files of writes into `out_dir` that a killed run left half-written."""
    for leftover in sorted(Path(out_dir).glob(TEMPORARY_PATTERN)):
        leftover.unlink(missing_ok=True)
        log.warning("removed %s, a file half-written by an interrupted run", leftover)


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
