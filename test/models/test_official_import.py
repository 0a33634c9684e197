"""Importing the published Mask2Former and PRO-SCALE checkpoints, and parity with the official code.

The checkpoints are rebuilt from the official-code fixtures (../shared/fixtures/official) by their
weight rule, written in the published containers, converted with `ros-seg convert --from-official`,
and run on the fixture's image: outputs equal the official code's within the fixture's 1e-4.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from ros_seg.cli import main
from ros_seg.models.checkpoint import CheckpointError
from ros_seg.models.load import load_model
from ros_seg.models.numpy_pickle import UnsafePickleError, load_numpy_pickle
from ros_seg.models.official_checkpoint_file import DETECTRON2, MODEL_ZOO_PICKLE, read_official_checkpoint
from ros_seg.models.registry import build_model, load_model_config

from official_reference import (
    M2F,
    PROSCALE,
    fixture_dir,
    reference,
    rule_tensor,
    rule_weights,
    write_detectron2_checkpoint,
    write_model_zoo_pickle,
)

pytestmark = pytest.mark.slow  # a check against a real reference: in CI, not in the quick loop

TOLERANCE = 1e-4  # the fixture README's bound for a faithful float32 port


def _convert(tmp_path_factory: pytest.TempPathFactory, fixture: str, model: str, writer, suffix: str):
    folder = tmp_path_factory.mktemp(model)
    official = folder / f"official.{suffix}"
    writer(rule_weights(fixture), official)
    out = folder / f"{model}.pt"
    assert main(["convert", "--from-official", str(official), "--model", model, "--out", str(out)]) == 0
    return load_model(weights=out).model


@pytest.fixture(scope="module")
def m2f(tmp_path_factory: pytest.TempPathFactory) -> torch.nn.Module:
    return _convert(tmp_path_factory, M2F, "m2f_r50", write_model_zoo_pickle, "pkl")


@pytest.fixture(scope="module")
def proscale(tmp_path_factory: pytest.TempPathFactory) -> torch.nn.Module:
    return _convert(tmp_path_factory, PROSCALE, "proscale_r50_333_coco", write_detectron2_checkpoint, "pth")


def _check_parity(model: torch.nn.Module, fixture: str) -> None:
    ref = reference(fixture)
    assert torch.equal(model.normalize_and_pad(ref["input_image"][None].float()), ref["input_tensor"])
    with torch.no_grad():
        out = model(ref["input_image"][None].float(), all_predictions=True)
    torch.testing.assert_close(out["pred_logits"], ref["pred_logits"], rtol=0, atol=TOLERANCE)
    torch.testing.assert_close(out["pred_masks"], ref["pred_masks"], rtol=0, atol=TOLERANCE)
    aux = torch.stack([a["pred_logits"] for a in out["aux_outputs"]])  # (9, 1, Q, K+1)
    torch.testing.assert_close(aux, ref["aux_pred_logits"], rtol=0, atol=TOLERANCE)


def test_m2f_r50_matches_the_official_code(m2f: torch.nn.Module) -> None:
    _check_parity(m2f, M2F)


def test_proscale_matches_the_official_code(proscale: torch.nn.Module) -> None:
    _check_parity(proscale, PROSCALE)


def test_m2f_r50_has_the_official_parameter_count() -> None:
    model, _ = build_model(load_model_config("m2f_r50"))
    assert sum(p.numel() for p in model.parameters()) == 44_007_700  # no decoder input projection at 256 = 256
    assert not any(k.startswith("transformer_decoder.input_proj") for k in model.state_dict())


@pytest.mark.parametrize("sample", ["format_sample.pkl", "format_sample_variant.pkl"])
def test_model_zoo_pickle_samples_read_back_as_the_rule(sample: str) -> None:
    official = read_official_checkpoint(fixture_dir(M2F) / sample)
    assert official.container == MODEL_ZOO_PICKLE and len(official.weights) == 5
    for name, value in official.weights.items():
        assert torch.equal(torch.from_numpy(value), rule_tensor(name, list(value.shape)))


def test_detectron2_sample_reads_back_as_the_rule() -> None:
    official = read_official_checkpoint(fixture_dir(PROSCALE) / "format_sample.pth")
    assert official.container == DETECTRON2 and len(official.weights) == 5
    for name, value in official.weights.items():
        assert torch.equal(value, rule_tensor(name, list(value.shape)))


class _RunsACommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickle_that_would_run_code_is_refused_by_name(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    hostile = tmp_path / "model_final.pkl"
    hostile.write_bytes(pickle.dumps({"model": {"backbone.w": _RunsACommand(marker)}}, protocol=2))
    with pytest.raises(UnsafePickleError, match=r"refusing to load (posix|os)\.system"):
        load_numpy_pickle(hostile)
    with pytest.raises(CheckpointError, match="system"):
        read_official_checkpoint(hostile)
    out = tmp_path / "out.pt"
    assert main(["convert", "--from-official", str(hostile), "--model", "m2f_r50", "--out", str(out)]) == 2
    assert not marker.exists() and not out.exists()


def test_checkpoint_of_another_label_set_lists_the_mis_shaped_tensors(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    official = tmp_path / "model_final.pth"
    write_detectron2_checkpoint(rule_weights(PROSCALE), official)
    out = tmp_path / "out.pt"
    assert main(["convert", "--from-official", str(official), "--model", "proscale_r50_333", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "transformer_decoder.class_embed.weight: expected (20, 256), found (134, 256)" in err
    assert not out.exists()
