"""The README's demo end to end at a reduced size: synthetic drive -> bag -> live replay through the node."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ros_seg.cli import main
from ros_seg.cli.demo import demo_checkpoint
from ros_seg.models.checkpoint import read_checkpoint


def test_demo_checkpoint_is_committed_and_small() -> None:
    weights = demo_checkpoint()
    assert weights is not None and weights.is_file()
    assert weights.stat().st_size < 25 * 2**20
    assert read_checkpoint(weights).config.name == "pem_stdc1"


def test_demo_runs_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "demo"
    args = ["demo", "--frames", "3", "--size", "64x128", "--rate", "2", "--device", "cpu", "--out", str(out)]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["frames_in"] == 3
    assert report["frames_processed"] + report["frames_dropped"] == 3
    assert report["frames_processed"] >= 1
    assert 0 < report["miou"] <= 100 and report["per_class_iou"], "the demo checkpoint finds road and sky"
    for name in ("report.md", "overlays.png", "latency_over_time.png", "per_class_iou.png"):
        assert (out / name).is_file(), name
    printed = capsys.readouterr().out
    assert "ros_seg demo" in printed and str(out.resolve() / "report.md") in printed
    # A second run reuses the generated drive and bag ...
    assert main(args) == 0
    assert "reusing the synthetic drive" in capsys.readouterr().out
    # ... unless they were made by another version of the scene generator.
    stamp = out / "inputs" / "inputs.json"
    stamp.write_text(json.dumps({**json.loads(stamp.read_text()), "generator": "an older one"}))
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "reusing" not in printed and "ros-seg synth" in printed


def test_demo_without_checkpoint_fails_clearly(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["demo", "--weights", str(tmp_path / "none.pt"), "--out", str(tmp_path / "d")]) == 2
    assert "demo checkpoint" in capsys.readouterr().err
