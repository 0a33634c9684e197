"""ONNX export and the onnxruntime backend: graph contents, parity with PyTorch, the Segmenter, errors.

The model is pem_stdc1 with random weights brought to the scale of a trained
model: deformable offsets of about a pixel (so DeformConv really samples off
the grid), confident class logits and mask logits of a few units.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from ros_seg.cli import main
from ros_seg.inference.onnx_export import MAX_IR_VERSION, OnnxModelError, export_onnx, read_onnx_info
from ros_seg.inference.segmenter import Segmenter
from ros_seg.models.checkpoint import save_checkpoint
from ros_seg.models.load import LoadedModel, load_model
from ros_seg.models.postprocess.label_maps import semantic_inference
from ros_seg.ops import DeformConv2d, deform_conv2d_reference, ms_deform_attn
from ros_seg.ops.ms_deform_attn_onnx import PLUGIN_DOMAIN, PLUGIN_OP, tensorrt_plugin_export

SIZE = (64, 128)

# The tests' own small exports use the TorchScript exporter on purpose, as ros_seg does.
pytestmark = [
    pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export"),
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
    pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning"),
]


def _trained_like(loaded: LoadedModel) -> LoadedModel:
    """Scale random weights to what a trained pem_stdc1 produces (offsets ~1 px, logits of several units)."""
    model = loaded.model
    with torch.no_grad():
        for block in model.pixel_decoder.deformable:
            nn.init.normal_(block.offset.weight, std=0.2)
        model.transformer_decoder.class_embed.weight.mul_(8)
        model.transformer_decoder.mask_embed.layers[-1].weight.mul_(20)
    return loaded


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    torch.manual_seed(0)
    return _trained_like(load_model("pem_stdc1"))


@pytest.fixture(scope="module")
def checkpoint(loaded: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "pem_stdc1.pt"
    save_checkpoint(path, loaded.model, loaded.config, loaded.metadata)
    return path


@pytest.fixture(scope="module")
def fixed_onnx(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fixed-size export made by the command line."""
    out = tmp_path_factory.mktemp("fixed") / "pem_stdc1.onnx"
    args = ["export", "--weights", str(checkpoint), "--format", "onnx", "--size", "64x128", "--out", str(out)]
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def dynamic_onnx(loaded: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(loaded, tmp_path_factory.mktemp("dynamic") / "pem_stdc1.onnx", SIZE, dynamic=True)


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _image(size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (1, 3, *size), dtype=np.uint8))


def _assert_parity(loaded: LoadedModel, session: ort.InferenceSession, size: tuple[int, int]) -> None:
    """Logits within 1e-3 and identical semantic labels on >= 99.9% of pixels (the real post-processing)."""
    image = _image(size, seed=size[0])
    with torch.no_grad():
        out = loaded.model(image.float(), all_predictions=False)
    class_logits, mask_logits = (torch.from_numpy(a) for a in session.run(None, {"image": image.numpy()}))
    assert mask_logits.shape == out["pred_masks"].shape
    torch.testing.assert_close(class_logits, out["pred_logits"], atol=1e-3, rtol=0)
    torch.testing.assert_close(mask_logits, out["pred_masks"], atol=1e-3, rtol=0)
    padded = (mask_logits.shape[2] * 4, mask_logits.shape[3] * 4)
    ours = semantic_inference(class_logits[0], mask_logits[0], size, padded, size)
    reference = semantic_inference(out["pred_logits"][0], out["pred_masks"][0], size, padded, size)
    assert (ours == reference).float().mean().item() >= 0.999
    assert len(reference.unique()) > 1  # a non-trivial map


def _nodes(path: Path, op_type: str) -> list[onnx.NodeProto]:
    return [n for n in onnx.load(path).graph.node if n.op_type == op_type]


def test_deform_conv_op_matches_reference(tmp_path: Path) -> None:
    """One DeformConv node per layer, attributes from the layer, ORT equal to the reference off the grid."""
    torch.manual_seed(1)
    layer = DeformConv2d(8, 6, 3, stride=2, padding=2, dilation=2, groups=2).eval()
    x = torch.randn(1, 8, 11, 13)
    offset = torch.randn(1, 2 * 2 * 9, 6, 7) * 3  # two offset groups; many samples leave the image
    mask = torch.rand(1, 2 * 9, 6, 7)
    path = tmp_path / "deform.onnx"
    torch.onnx.export(layer, (x, offset, mask), path, dynamo=False, opset_version=19, autograd_inlining=False)
    (node,) = _nodes(path, "DeformConv")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs == {
        "dilations": [2, 2],
        "group": 2,
        "kernel_shape": [3, 3],
        "offset_group": 2,
        "pads": [2, 2, 2, 2],
        "strides": [2, 2],
    }
    session = _session(path)
    (got,) = session.run(None, {i.name: t.numpy() for i, t in zip(session.get_inputs(), (x, offset, mask))})
    expected = deform_conv2d_reference(x, offset, layer.weight, layer.bias, 2, 2, 2, mask)
    torch.testing.assert_close(torch.from_numpy(got), expected.detach(), atol=1e-4, rtol=1e-4)


def test_fixed_export(loaded: LoadedModel, fixed_onnx: Path) -> None:
    graph = onnx.load(fixed_onnx)
    assert graph.ir_version <= MAX_IR_VERSION
    onnx.checker.check_model(graph)
    (image,) = graph.graph.input
    assert image.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_value for d in image.type.tensor_type.shape.dim] == [1, 3, *SIZE]
    deform = _nodes(fixed_onnx, "DeformConv")
    assert len(deform) == 3  # PEM pixel decoder at 1/32, 1/16, 1/8
    for node in deform:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["kernel_shape"] == [3, 3] and attrs["pads"] == [1, 1, 1, 1]
        assert attrs["strides"] == [1, 1] and attrs["dilations"] == [1, 1]
        assert attrs["group"] == 1 and attrs["offset_group"] == 1
        assert len(node.input) == 5  # input, weight, offset, bias (zeros), mask
    info = read_onnx_info(fixed_onnx)
    assert info.input_size == SIZE and info.target == "onnxruntime" and info.config.name == "pem_stdc1"
    _assert_parity(loaded, _session(fixed_onnx), SIZE)


def test_dynamic_export_at_other_sizes(loaded: LoadedModel, dynamic_onnx: Path) -> None:
    graph = onnx.load(dynamic_onnx)
    assert graph.ir_version <= MAX_IR_VERSION
    dims = graph.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims[2:]] == ["height", "width"]
    assert read_onnx_info(dynamic_onnx).input_size is None
    session = _session(dynamic_onnx)
    for size in ((96, 160), (70, 90)):  # traced at 65x129; the last needs padding inside the graph
        _assert_parity(loaded, session, size)


def test_segmenter_onnxruntime_equals_torch(
    checkpoint: Path, fixed_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROS_SEG_CACHE", str(tmp_path / "cache"))
    image = _image(SIZE, seed=5)[0].permute(1, 2, 0).numpy()  # (H, W, 3)
    torch_seg = Segmenter(weights=str(checkpoint), device="cpu")
    ort_seg = Segmenter(weights=str(checkpoint), device="cpu", backend="onnxruntime", input_size=SIZE)
    assert ort_seg.backend.name == "onnxruntime" and ort_seg.model_name == "pem_stdc1"
    assert len(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == 1  # exported once into the cache
    expected = torch_seg.segment(image).semantic
    assert (ort_seg.segment(image).semantic == expected).mean() >= 0.999
    # A fixed-size export resizes other images to its size and answers at the image's size.
    from_file = Segmenter(weights=str(fixed_onnx), device="cpu", backend="onnxruntime")
    assert from_file.input_size == SIZE
    assert (from_file.segment(image).semantic == expected).mean() >= 0.999
    other = np.ascontiguousarray(np.tile(image, (2, 2, 1))[:100, :150])
    assert from_file.segment(other).semantic.shape == (100, 150)


def test_bad_paths_and_arguments(fixed_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        Segmenter(weights=str(tmp_path / "missing.onnx"), device="cpu", backend="onnxruntime")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(OnnxModelError, match="cannot read ONNX model"):
        Segmenter(weights=str(garbage), device="cpu", backend="onnxruntime")
    foreign = tmp_path / "foreign.onnx"
    torch.onnx.export(nn.Linear(2, 2), (torch.zeros(1, 2),), foreign, dynamo=False)
    with pytest.raises(OnnxModelError, match="not a ros_seg ONNX export"):
        Segmenter(weights=str(foreign), device="cpu", backend="onnxruntime")
    with pytest.raises(ValueError, match="takes input size 64x128"):
        Segmenter(weights=str(fixed_onnx), device="cpu", backend="onnxruntime", input_size=(32, 32))
    with pytest.raises(OnnxModelError, match="holds model 'pem_stdc1'"):
        Segmenter(model="pem_r50", weights=str(fixed_onnx), device="cpu", backend="onnxruntime")
    with pytest.raises(ValueError, match="fp32 only"):
        Segmenter(weights=str(fixed_onnx), device="cpu", backend="onnxruntime", precision="fp16")
    with pytest.raises(ValueError, match="unknown backend 'openvino'"):
        Segmenter(device="cpu", backend="openvino")
    if importlib.util.find_spec("tensorrt") is None:
        with pytest.raises(ValueError, match="pip install tensorrt"):
            Segmenter(weights=str(fixed_onnx), device="cpu", backend="tensorrt")
    assert main(["export", "--model", "pem_stdc1", "--format", "onnx", "--precision", "fp16", "--out", "m.onnx"]) == 2
    assert "--precision applies to --format tensorrt" in capsys.readouterr().err
    assert main(["export", "--model", "pem_stdc1", "--format", "onnx", "--out", str(tmp_path / "m.txt")]) == 2
    assert "must be an .onnx file" in capsys.readouterr().err
    assert main(["export", "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "give --model, --weights or both" in capsys.readouterr().err


class _Attention(nn.Module):
    """Multi-scale deformable attention over two levels (4x4 and 2x2 tokens)."""

    def forward(self, value: torch.Tensor, locations: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return ms_deform_attn(value, torch.tensor([[4, 4], [2, 2]]), torch.tensor([0, 16]), locations, weights)


def _attention_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(2)
    locations = torch.rand(1, 5, 2, 2, 3, 2) * 1.4 - 0.2  # some samples fall outside their level
    return torch.randn(1, 20, 2, 4), locations, torch.rand(1, 5, 2, 2, 3)


def _element_type(graph: onnx.ModelProto, name: str) -> int:
    """Element type of a tensor made by a Constant or a Cast node."""
    (node,) = [n for n in graph.graph.node if name in n.output]
    value = onnx.helper.get_attribute_value(node.attribute[0])
    return value.data_type if node.op_type == "Constant" else value


def test_tensorrt_flavour_writes_the_plugin_node(tmp_path: Path) -> None:
    path = tmp_path / "trt.onnx"
    with tensorrt_plugin_export():
        torch.onnx.export(
            _Attention(), _attention_inputs(), path, dynamo=False, opset_version=19, autograd_inlining=False
        )
    graph = onnx.load(path)
    (plugin,) = [n for n in graph.graph.node if n.op_type == PLUGIN_OP]
    assert plugin.domain == PLUGIN_DOMAIN
    assert {a.name: onnx.helper.get_attribute_value(a) for a in plugin.attribute} == {
        "plugin_version": b"1",
        "plugin_namespace": b"",
    }
    assert list(plugin.input[0:1]) + list(plugin.input[3:]) == [i.name for i in graph.graph.input]
    assert [_element_type(graph, name) for name in plugin.input[1:3]] == [onnx.TensorProto.INT32] * 2
    assert not [n for n in graph.graph.node if n.op_type in ("GridSample", "Loop")]  # nothing else samples


def test_onnxruntime_flavour_uses_grid_sample(tmp_path: Path) -> None:
    path = tmp_path / "ort.onnx"
    inputs = _attention_inputs()
    torch.onnx.export(_Attention(), inputs, path, dynamo=False, opset_version=19, autograd_inlining=False)
    ops = [n.op_type for n in onnx.load(path).graph.node]
    assert ops.count("GridSample") == 2 and PLUGIN_OP not in ops
    session = _session(path)
    (got,) = session.run(None, {i.name: t.numpy() for i, t in zip(session.get_inputs(), inputs)})
    torch.testing.assert_close(torch.from_numpy(got), _Attention()(*inputs), atol=1e-5, rtol=1e-5)


def test_tensorrt_flavour_of_a_proscale_model(tmp_path: Path) -> None:
    """PRO-SCALE's encoder layers each become one plugin node; ONNX Runtime refuses the TensorRT flavour."""
    torch.manual_seed(0)
    loaded = load_model("proscale_r50_111")
    path = export_onnx(loaded, tmp_path / "proscale.onnx", SIZE, target="tensorrt")
    graph = onnx.load(path)
    assert graph.ir_version <= MAX_IR_VERSION
    ops = [n.op_type for n in graph.graph.node]
    assert ops.count(PLUGIN_OP) == sum(loaded.config.pixel_decoder.proscale_layers)
    assert "GridSample" not in ops
    assert read_onnx_info(path).target == "tensorrt"
    with pytest.raises(OnnxModelError, match="exported for tensorrt"):
        Segmenter(weights=str(path), device="cpu", backend="onnxruntime")
    with pytest.raises(ValueError, match="cannot be exported with a dynamic input size"):
        export_onnx(loaded, tmp_path / "dynamic.onnx", SIZE, dynamic=True)


def test_bench_compares_backends(tmp_path: Path) -> None:
    dest = tmp_path / "bench.json"
    args = ["bench", "--model", "pem_stdc1", "--size", "64x96", "--compare-backends", "torch,onnxruntime"]
    assert main([*args, "--warmup", "0", "--repeats", "1", "--json", str(dest)]) == 0
    out = json.loads(dest.read_text())
    assert [r["backend"] for r in out["runs"]] == ["torch", "onnxruntime"]
    assert out["speedup"]["torch"] == {"end_to_end": 1.0, "model": 1.0}
    assert out["speedup"]["onnxruntime"]["model"] > 0 and len(out["load_average"]["before"]) == 3
    with pytest.raises(SystemExit):
        main(["bench", "--model", "pem_stdc1", "--compare-backends", "torch"])


@pytest.mark.parametrize("name", ["proscale_r50_111", "panoptic_segformer_r50"])
def test_onnxruntime_parity_of_deformable_attention_models(name: str, tmp_path: Path) -> None:
    """PRO-SCALE and Panoptic SegFormer export at a fixed size and match PyTorch under onnxruntime."""
    torch.manual_seed(0)
    loaded = load_model(name)
    path = export_onnx(loaded, tmp_path / f"{name}.onnx", SIZE, dynamic=False)
    assert onnx.load(path).ir_version <= MAX_IR_VERSION
    image = _image(SIZE, seed=5)
    with torch.no_grad():
        out = loaded.model(image.float(), all_predictions=False)
    class_logits, mask_logits = _session(path).run(None, {"image": image.numpy()})
    torch.testing.assert_close(torch.from_numpy(class_logits), out["pred_logits"], atol=1e-3, rtol=0)
    torch.testing.assert_close(torch.from_numpy(mask_logits), out["pred_masks"], atol=1e-3, rtol=0)
