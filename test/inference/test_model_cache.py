"""The export cache: entries recorded with their SHA-256 and checked before use; a truncated ONNX export is built
again, not loaded."""
from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch

from ros_seg.inference.model_cache import DIGEST_SUFFIX, intact_entry, record_entry
from ros_seg.inference.onnx_export import cached_export
from ros_seg.models.checkpoint import save_checkpoint
from ros_seg.models.model_config import ModelConfig
from ros_seg.models.registry import build_model

from tiny_model import TINY_MODEL


def test_entries_are_intact_only_with_a_matching_record(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    entry = tmp_path / "model.onnx"
    entry.write_bytes(b"x" * 1000)
    assert not intact_entry(entry) and not entry.exists()  # no record: a writer killed before finishing it
    entry.write_bytes(b"x" * 1000)
    record_entry(entry)
    assert intact_entry(entry)
    with open(entry, "r+b") as f:
        f.truncate(500)
    with caplog.at_level("WARNING"):
        assert not intact_entry(entry)
    assert "does not match its recorded checksum" in caplog.text
    assert not entry.exists() and not (tmp_path / f"model.onnx{DIGEST_SUFFIX}").exists()


def test_truncated_cached_export_is_built_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROS_SEG_CACHE", str(tmp_path / "cache"))
    config = ModelConfig.from_dict(TINY_MODEL)
    torch.manual_seed(0)
    model, metadata = build_model(config)
    weights = tmp_path / "tiny.pt"
    save_checkpoint(weights, model, config, metadata)
    first = cached_export(weights, None, (64, 128), "onnxruntime")
    whole = first.read_bytes()
    with open(first, "r+b") as f:
        f.truncate(len(whole) // 2)  # as a full disk or a kill during an unfenced write left it
    second = cached_export(weights, None, (64, 128), "onnxruntime")
    assert second == first and second.read_bytes() == whole
    onnx.checker.check_model(onnx.load(second))
