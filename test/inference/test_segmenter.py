"""The Segmenter: encodings, sizes, result consistency, bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ros_seg.inference.image_input import ImageError, image_to_tensor
from ros_seg.inference.segmenter import Segmenter, resolve_device
from ros_seg.models.meta_architecture import PostprocessOptions


@pytest.fixture(scope="module")
def segmenter() -> Segmenter:
    # Random weights; a low threshold so segments exist and their bookkeeping is exercised.
    return Segmenter("pem_stdc1", device="cpu", score_threshold=0.0, overlap_threshold=0.0)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(70, 90, 3), dtype=np.uint8)


def test_result_is_consistent(segmenter: Segmenter, image: np.ndarray) -> None:
    r = segmenter.segment(image, "rgb8")
    assert r.semantic.shape == (70, 90) and r.semantic.dtype == np.uint8
    assert r.panoptic.shape == (70, 90) and r.panoptic.dtype == np.int32
    assert r.semantic.max() < segmenter.metadata.num_classes
    ids = set(np.unique(r.panoptic).tolist()) - {0}
    assert ids == {s.id for s in r.segments}
    assert len(r.segments) > 0
    for s in r.segments:
        mask = r.panoptic == s.id
        ys, xs = np.nonzero(mask)
        assert s.area == mask.sum()
        assert s.bbox == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
        assert abs(s.centroid[0] - xs.mean()) < 1e-6 and abs(s.centroid[1] - ys.mean()) < 1e-6
        assert s.class_name == segmenter.metadata.names[s.class_id]
        assert s.is_thing == segmenter.metadata.is_thing[s.class_id]
    assert set(r.timings) == {"preprocess", "infer", "postprocess"}


def test_options_choose_the_thresholds_per_image(segmenter: Segmenter, image: np.ndarray) -> None:
    """Thresholds given to segment() apply to that image only; the Segmenter keeps its defaults."""
    assert segmenter.default_options == PostprocessOptions(0.0, 0.0)
    assert segmenter.segment(image, "rgb8", PostprocessOptions(1.0, 0.0)).segments == []  # no score exceeds 1
    given = segmenter.segment(image, "rgb8", PostprocessOptions(0.0, 0.0))
    assert segmenter.segment(image, "rgb8").segments == given.segments
    assert segmenter.default_options == PostprocessOptions(0.0, 0.0)


def test_encodings_agree(segmenter: Segmenter, image: np.ndarray) -> None:
    ref = segmenter.segment(image, "rgb8")
    bgr = np.ascontiguousarray(image[:, :, ::-1])
    rgba = np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])
    bgra = np.dstack([bgr, np.zeros(image.shape[:2], np.uint8)])
    for img, enc in ((bgr, "bgr8"), (rgba, "rgba8"), (bgra, "bgra8")):
        r = segmenter.segment(img, enc)
        np.testing.assert_array_equal(r.semantic, ref.semantic)
    mono = segmenter.segment(image[:, :, 0].copy(), "mono8")
    assert mono.semantic.shape == (70, 90)


def test_network_input_size_and_output_resolution(image: np.ndarray) -> None:
    seg = Segmenter("pem_stdc1", device="cpu", input_size=(64, 96), output_resolution="network")
    r = seg.segment(image)
    assert r.semantic.shape == (64, 96) and r.panoptic.shape == (64, 96)
    seg_in = Segmenter("pem_stdc1", device="cpu", input_size=(64, 96))
    assert seg_in.segment(image).semantic.shape == (70, 90)


def test_bfloat16_autocast_on_cpu(image: np.ndarray) -> None:
    seg = Segmenter("pem_stdc1", device="cpu", precision="bf16")
    r = seg.segment(image)
    assert r.semantic.shape == (70, 90) and seg.precision == "bf16"


def _area_weights(src: int, dst: int) -> np.ndarray:
    """(dst, src) matrix: the fraction of output pixel i's footprint covered by input pixel j."""
    edges = np.arange(dst + 1) * src / dst
    left, right = np.arange(src)[None, :], np.arange(1, src + 1)[None, :]
    overlap = np.clip(np.minimum(right, edges[1:, None]) - np.maximum(left, edges[:-1, None]), 0, None)
    return overlap / (src / dst)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
def test_cpu_resize_averages_areas_when_shrinking_and_interpolates_when_growing(image: np.ndarray,
                                                                              encoding: str) -> None:
    """On the CPU a shrinking resize is the area-weighted mean of the input pixels an output pixel
    covers, a growing one bilinear (align_corners=False) — within the one grey level of 8-bit
    rounding, for every encoding."""
    pixels = {
        "rgb8": image,
        "bgr8": image[:, :, ::-1],
        "rgba8": np.dstack([image, np.full(image.shape[:2], 7, np.uint8)]),
        "bgra8": np.dstack([image[:, :, ::-1], np.zeros(image.shape[:2], np.uint8)]),
        "mono8": image[:, :, :1],
    }[encoding]
    full = image_to_tensor(pixels, encoding, torch.device("cpu"))
    assert full.shape == (1, 3, 70, 90)
    for size in ((35, 45), (30, 64), (56, 72)):
        ours = image_to_tensor(pixels, encoding, torch.device("cpu"), size)
        wy, wx = (torch.from_numpy(_area_weights(n, m)).float() for n, m in zip((70, 90), size))
        ref = torch.einsum("yh,chw,xw->cyx", wy, full[0], wx)
        assert ours.shape == (1, 3, *size) and ours.dtype == torch.float32
        assert (ours[0] - ref).abs().max() <= 1.0, size
    for size in ((101, 130), (140, 180)):
        ours = image_to_tensor(pixels, encoding, torch.device("cpu"), size)
        ref = F.interpolate(full, size=size, mode="bilinear", align_corners=False)
        assert (ours - ref).abs().max() <= 1.0, size
    assert torch.equal(image_to_tensor(pixels, encoding, torch.device("cpu"), (70, 90)), full)


@pytest.mark.parametrize(
    "bad, encoding, message",
    [
        (np.zeros((10, 10, 3), np.float32), "rgb8", "uint8"),
        (np.zeros((10, 10, 4), np.uint8), "rgb8", "4 channels"),
        (np.zeros((10, 10), np.uint8), "rgb8", "shape"),
        (np.zeros((0, 10, 3), np.uint8), "rgb8", "empty"),
        (np.zeros((10, 10, 3), np.uint8), "yuv422", "unknown image encoding"),
        ([[1, 2]], "rgb8", "numpy array"),
    ],
)
def test_bad_images_are_rejected_clearly(segmenter: Segmenter, bad, encoding: str, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        segmenter.segment(bad, encoding)


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        Segmenter("no_such_model", device="cpu")
    with pytest.raises(ValueError, match="precision"):
        Segmenter("pem_stdc1", device="cpu", precision="int3")
    with pytest.raises(ValueError, match="backend"):
        Segmenter("pem_stdc1", device="cpu", backend="magic")
    with pytest.raises(ValueError, match="device"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="compile mode"):
        Segmenter("pem_stdc1", device="cpu", compile_mode="fastest")
    with pytest.raises(ValueError, match="torch backend only"):
        Segmenter("pem_stdc1", device="cpu", backend="onnxruntime", compile_mode="default")


def test_compiled_model_gives_the_eager_outputs() -> None:
    """torch.compile (inductor; CUDA graphs are the same on a GPU) traces our models: the same logits."""
    from ros_seg.inference.backends.torch_backend import TorchBackend
    from ros_seg.models.load import load_model

    model = load_model("pem_stdc1").model
    images = torch.rand(1, 3, 64, 128, generator=torch.Generator().manual_seed(0)) * 255
    eager = TorchBackend(model, torch.device("cpu")).infer(images)
    compiled_backend = TorchBackend(model, torch.device("cpu"), compile_mode="default")
    compiled = compiled_backend.infer(images)
    for ours, expected in zip(compiled, eager):
        torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)
    again = compiled_backend.infer(images * 0.5)  # a second call reuses the compiled graph
    torch.testing.assert_close(again[0], TorchBackend(model, torch.device("cpu")).infer(images * 0.5)[0],
                               rtol=1e-4, atol=1e-4)
