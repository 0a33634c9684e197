"""The output folder of a training: periodic checkpoints beyond keep_checkpoints and leftovers of killed writes
are removed."""
from __future__ import annotations

from pathlib import Path

from ros_seg.train.run_files import checkpoint_name, remove_old_checkpoints, remove_temporary_files


def test_only_the_newest_periodic_checkpoints_are_kept(tmp_path: Path) -> None:
    names = [checkpoint_name(i) for i in (500, 1000, 1500, 2000)] + ["model_final.pt", "model_best.pt", "model_x.pt"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    remove_old_checkpoints(tmp_path, 0)  # 0: keep all
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    remove_old_checkpoints(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [checkpoint_name(1500), checkpoint_name(2000), "model_final.pt", "model_best.pt", "model_x.pt"])


def test_temporary_files_of_interrupted_writes_are_removed(tmp_path: Path) -> None:
    for name in (".model_0000500.pt.abc123.tmp", ".last_checkpoint.tmp", "model_0000500.pt", "notes.tmp"):
        (tmp_path / name).write_bytes(b"")
    remove_temporary_files(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_0000500.pt", "notes.tmp"]
