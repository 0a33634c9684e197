"""TensorRT backend: engine build and cache, parity with PyTorch, ahead-of-time engines, plugin models.

Runs only where the `tensorrt` package imports and a CUDA device is present;
skipped everywhere else (CI, CPU machines).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

trt = pytest.importorskip("tensorrt")
if not torch.cuda.is_available():
    pytest.skip("TensorRT tests need a CUDA device", allow_module_level=True)

from ros_seg.cli import main  # noqa: E402
from ros_seg.inference.onnx_export import export_onnx  # noqa: E402
from ros_seg.inference.segmenter import Segmenter  # noqa: E402
from ros_seg.models.checkpoint import save_checkpoint  # noqa: E402
from ros_seg.models.load import load_model  # noqa: E402

SIZE = (128, 256)


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ROS_SEG_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    loaded = load_model("pem_stdc1")
    path = tmp_path_factory.mktemp("ckpt") / "pem_stdc1.pt"
    save_checkpoint(path, loaded.model, loaded.config, loaded.metadata)
    return path


def _image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (*SIZE, 3), dtype=np.uint8)


def test_fp32_engine_matches_torch_and_is_cached(checkpoint: Path, cache: Path) -> None:
    reference = Segmenter(weights=str(checkpoint), device="cuda", input_size=SIZE)
    seg = Segmenter(weights=str(checkpoint), device="cuda", backend="tensorrt", input_size=SIZE)
    assert seg.backend.name == "tensorrt" and seg.input_size == SIZE
    engines = list((cache / "tensorrt").glob("*.engine"))
    assert len(engines) == 1 and list((cache / "tensorrt").glob("timing-*.cache"))
    image = torch.from_numpy(_image()).permute(2, 0, 1)[None].float().cuda()
    ours, theirs = seg.backend.infer(image), reference.backend.infer(image)
    torch.testing.assert_close(ours[0], theirs[0], atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(ours[1], theirs[1], atol=1e-2, rtol=1e-2)
    agree = (seg.segment(_image()).semantic == reference.segment(_image()).semantic).mean()
    assert agree >= 0.99
    built = engines[0].stat().st_mtime_ns
    Segmenter(weights=str(checkpoint), device="cuda", backend="tensorrt", input_size=SIZE)
    assert engines[0].stat().st_mtime_ns == built  # reused, not rebuilt


def test_ahead_of_time_engine(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "pem_stdc1.engine"
    args = ["export", "--weights", str(checkpoint), "--format", "tensorrt", "--precision", "fp16"]
    assert main([*args, "--size", "128x256", "--out", str(out)]) == 0
    assert out.is_file() and out.with_suffix(".onnx").is_file()
    seg = Segmenter(weights=str(out), device="cuda", backend="tensorrt")
    assert seg.input_size == SIZE
    assert seg.segment(_image()).semantic.shape == SIZE
    out.with_suffix(".onnx").unlink()
    with pytest.raises(ValueError, match="needs the ONNX export it was built from"):
        Segmenter(weights=str(out), device="cuda", backend="tensorrt")


def test_plugin_model_runs(tmp_path: Path, cache: Path) -> None:
    """PRO-SCALE's deformable attention runs as MultiscaleDeformableAttnPlugin_TRT."""
    torch.manual_seed(0)
    loaded = load_model("proscale_r50_111")
    path = export_onnx(loaded, tmp_path / "proscale.onnx", SIZE, target="tensorrt")
    seg = Segmenter(weights=str(path), device="cuda", backend="tensorrt")
    image = torch.from_numpy(_image()).permute(2, 0, 1)[None].float().cuda()
    class_logits, mask_logits = seg.backend.infer(image)
    with torch.no_grad():
        expected = loaded.model.cuda()(image, all_predictions=False)
    torch.testing.assert_close(class_logits, expected["pred_logits"], atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(mask_logits, expected["pred_masks"], atol=1e-2, rtol=1e-2)


def test_cpu_device_is_refused(checkpoint: Path, cache: Path) -> None:
    with pytest.raises(ValueError, match="CUDA devices only"):
        Segmenter(weights=str(checkpoint), device="cpu", backend="tensorrt", input_size=SIZE)
