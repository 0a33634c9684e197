"""Crafted checkpoints, model configs and ONNX metadata: refused at load with one error naming the key and file,
in bounded time and memory, without quoting the file."""
from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from ros_seg.cli import main
from ros_seg.models.checkpoint import FORMAT, VERSION, CheckpointError, read_checkpoint, save_checkpoint
from ros_seg.models.class_metadata import CITYSCAPES
from ros_seg.models.model_config import ModelConfig
from ros_seg.models.registry import load_model_config
from ros_seg.models.strict_config import ConfigError


def _checkpoint_data(**changes: Any) -> dict[str, Any]:
    """The contents of a small, valid checkpoint (one tensor, no checksum) with `changes` laid over them."""
    data = {
        "format": FORMAT,
        "version": VERSION,
        "model_config": load_model_config("pem_stdc1").to_dict(),
        "class_metadata": CITYSCAPES.to_dict(),
        "state_dict": {"w": torch.zeros(2)},
        "extra": {},
    }
    data.update(changes)
    return data


def _shared_reference_bomb() -> list[Any]:
    """A list nested 9 deep whose walk visits 10**9 leaves, pickled in a few hundred bytes."""
    node: list[Any] = [0]
    for _ in range(9):
        node = [node] * 10
    return node


def test_checkpoint_of_shared_references_is_refused_quickly(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "bomb.pt"
    torch.save(_checkpoint_data(extra={"history": _shared_reference_bomb()}), path)
    assert path.stat().st_size < 4096
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=r"bomb\.pt holds more than \d+ values"):
        read_checkpoint(path)
    assert time.perf_counter() - start < 5.0
    assert main(["convert", "--from-checkpoint", str(path), "--storage", "fp16", "--out", str(tmp_path / "o.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bomb.pt" in err and "Traceback" not in err


def _metadata(**changes: Any) -> dict[str, Any]:
    return {**CITYSCAPES.to_dict(), **changes}


def _model_config(section: str, key: str, value: Any) -> dict[str, Any]:
    config = load_model_config("pem_stdc1").to_dict()
    config[section][key] = value
    return config


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"state_dict": None}, r"'state_dict' in .*ckpt\.pt must map tensor names to tensors, found nothing"),
        ({"state_dict": [torch.zeros(1)]}, r"'state_dict' in .*ckpt\.pt must map tensor names to tensors, found list"),
        ({"state_dict": {"w": 3}}, r"'state_dict' in .*ckpt\.pt .* but 'w' holds a int"),
        ({"model_config": _model_config("transformer_decoder", "num_queries", -5)},
         r"'transformer_decoder\.num_queries' in .*ckpt\.pt \(model_config\) must be in \[1, 65536\], got -5"),
        ({"model_config": _model_config("input", "size_divisibility", 0)},
         r"'input\.size_divisibility' in .*ckpt\.pt \(model_config\) must be in \[1, 65536\], got 0"),
        ({"model_config": _model_config("input", "pixel_std", [1.0, 0.0, 1.0])}, r"'input\.pixel_std' in .*ckpt\.pt"),
        ({"model_config": "pem"}, r"'model_config' in .*ckpt\.pt must be a mapping, got str"),
        ({"class_metadata": _metadata(names=CITYSCAPES.to_dict()["names"][:5])},
         r"class metadata in .*ckpt\.pt: class metadata lists differ in length: 5 names, 19 colors"),
        ({"class_metadata": {k: v[:5] if isinstance(v, list) else v for k, v in CITYSCAPES.to_dict().items()}},
         r"class metadata in .*ckpt\.pt names 5 classes, but its model \(dataset 'cityscapes'\) predicts 19"),
        ({"class_metadata": _metadata(colors=[[0, 0, 300]] * 19)},
         r"'colors\[0\]' of the class metadata in .*ckpt\.pt must be three integers in \[0, 255\]"),
        ({"int8_scales": {"absent": torch.ones(2)}}, r"'int8_scales\.absent' in .*ckpt\.pt does not fit"),
        ({"version": 7}, r"ckpt\.pt has checkpoint version 7"),
        ({"extra": {"x": {1.5: 2}}}, r"ckpt\.pt has a key of type float at extra\.x"),
    ],
)
def test_bad_checkpoint_contents_give_one_error_naming_key_and_file(
    tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save(_checkpoint_data(**changes), path)
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(path)


def test_flipped_tensor_bytes_are_detected(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = load_model_config("pem_stdc1")
    model = torch.nn.Linear(4, 4)  # read_checkpoint checks the file, not the fit to a model
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, model, config, CITYSCAPES)
    assert read_checkpoint(path).state_dict["weight"].shape == (4, 4)
    data = torch.load(path, weights_only=True)
    data["state_dict"]["weight"][1, 2] += 1e-3
    torch.save(data, path)
    with pytest.raises(CheckpointError, match=r"tensors of .*ckpt\.pt do not match the checksum"):
        read_checkpoint(path)
    del data["tensor_checksum"]  # a checkpoint from before checksums: loads, with a note
    torch.save(data, path)
    with caplog.at_level("INFO"):
        read_checkpoint(path)
    assert "has no tensor checksum" in caplog.text


def test_yaml_aliases_are_refused_quickly(tmp_path: Path) -> None:
    lines = ["a0: &a0 [" + ", ".join(["1"] * 20) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 20) + "]" for i in range(1, 7)]  # 20**7 values
    path = tmp_path / "aliases.yaml"
    path.write_text("\n".join(lines) + "\n")
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"aliases\.yaml holds more than \d+ values"):
        ModelConfig.from_yaml(path)
    assert time.perf_counter() - start < 5.0


def test_config_errors_do_not_quote_other_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    secret = tmp_path / "shadow"
    secret.write_text("".join(f"user{i}:$6$salt$SECRETHASH{i}:19000:0:99999:7:::\n" for i in range(20)))
    config = tmp_path / "model.yaml"
    config.write_text(f"_base_: {secret}\n")
    assert main(["describe", "--model", str(config)]) == 2
    err = capsys.readouterr().err
    assert "SECRETHASH" not in err and err.count("\n") == 1
    secret.write_text("".join(f"SECRET{i}: x\nuser{i}:SECRETHASH{i}: y\n" for i in range(20)))
    with pytest.raises(ConfigError) as caught:
        ModelConfig.from_yaml(config)
    assert "SECRETHASH" not in str(caught.value) and "and 15 more" in str(caught.value)
    assert "20 key(s) that are no names" in str(caught.value)


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    """A random value of the kinds a crafted file can hold: leaves of every type, containers nested a few deep."""
    kind = rng.randrange(7) if depth < 4 else rng.randrange(3)
    if kind == 0:
        return rng.choice([0, -1, 2**40, 1.5, float("nan"), float("inf"), True, None, "", "\x1b[2J" * 30, "x" * 500])
    if kind == 1:
        return rng.choice([torch.zeros(1), torch.ones(2, 2, dtype=torch.int8), torch.zeros(0)])
    if kind == 2:
        return rng.choice(["pem", 19, [0, 0, 0], [1.0, 2.0]])
    if kind == 3:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(6))]
    if kind == 4:
        return {rng.choice(["names", "w", 1, "state_dict", "\x00"]): _random_value(rng, depth + 1)
                for _ in range(rng.randrange(4))}
    if kind == 5:
        return tuple(_random_value(rng, depth + 1) for _ in range(rng.randrange(3)))
    return [_random_value(rng, depth + 1)] * rng.randrange(1, 50)  # shared references


def _mutated(data: Any, rng: random.Random) -> Any:
    """`data` with one value somewhere inside replaced by a random one (or a key removed)."""
    if not isinstance(data, dict | list) or not data or rng.random() < 0.25:
        return _random_value(rng)
    data = dict(data) if isinstance(data, dict) else list(data)
    key = rng.choice(list(data)) if isinstance(data, dict) else rng.randrange(len(data))
    if isinstance(data, dict) and rng.random() < 0.2:
        del data[key]
    else:
        data[key] = _mutated(data[key], rng)
    return data


def test_fuzzed_checkpoints_and_configs_fail_only_with_their_own_errors(tmp_path: Path) -> None:
    """Random changes anywhere in a valid checkpoint or model config: loaded, or refused with CheckpointError /
    ConfigError of one short line, never another exception, and quickly."""
    rng = random.Random(26)
    valid = _checkpoint_data()
    path = tmp_path / "fuzz.pt"
    start = time.perf_counter()
    for _ in range(150):
        torch.save(_mutated(valid, rng), path)
        try:
            read_checkpoint(path)
        except CheckpointError as exc:
            assert "\n" not in str(exc) and "\x1b" not in str(exc) and len(str(exc)) < 600, str(exc)
        try:
            ModelConfig.from_dict(_mutated(valid["model_config"], rng), source="fuzz.yaml")
        except ConfigError as exc:
            assert "\n" not in str(exc) and "\x1b" not in str(exc) and len(str(exc)) < 600, str(exc)
    assert time.perf_counter() - start < 20.0


def _onnx_with_metadata(path: Path, **props: str) -> Path:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph)
    base = {"model_config": json.dumps(load_model_config("pem_stdc1").to_dict()),
            "class_metadata": json.dumps(CITYSCAPES.to_dict()), "input_size": "64x128", "target": "onnxruntime"}
    helper.set_model_props(model, {f"ros_seg.{k}": v for k, v in {**base, **props}.items()})
    onnx.save(model, path)
    return path


def test_fuzzed_onnx_metadata_fails_only_with_onnx_model_errors(tmp_path: Path) -> None:
    """Random changes in the model config and class metadata an ONNX file carries: loaded or OnnxModelError."""
    from ros_seg.inference.onnx_export import OnnxModelError, read_onnx_info

    rng = random.Random(11)
    valid = _checkpoint_data()
    for i in range(40):
        props = {"model_config": json.dumps(_mutated(valid["model_config"], rng), default=str),
                 "class_metadata": json.dumps(_mutated(valid["class_metadata"], rng), default=str),
                 "input_size": rng.choice(["64x128", "dynamic", "0x5", "x", "1x1x1", "٣x4"])}
        path = _onnx_with_metadata(tmp_path / f"m{i}.onnx", **props)
        try:
            read_onnx_info(path)
        except OnnxModelError as exc:
            assert "\n" not in str(exc) and len(str(exc)) < 600, str(exc)


@pytest.mark.parametrize(
    "props, message",
    [
        ({"model_config": "[" * 100000 + "]" * 100000}, r"'ros_seg\.model_config' in the metadata of .*m\.onnx nests"),
        ({"class_metadata": "[" * 40 + "]" * 40}, r"'ros_seg\.class_metadata' in the metadata of .*m\.onnx nests "
                                                  r"deeper than"),
        ({"input_size": "0x0"}, r"'ros_seg\.input_size' .*m\.onnx must be 'dynamic' or HEIGHTxWIDTH"),
        ({"input_size": "-64x-128"}, r"'ros_seg\.input_size' .* got '-64x-128'"),
        ({"input_size": "60000x60000"}, r"'ros_seg\.input_size' .* each side in \[1, 16384\]"),
        ({"input_size": "9" * 5000 + "x1"}, r"'ros_seg\.input_size' .* got '9999"),
        ({"target": "cuda"}, r"'ros_seg\.target' in the metadata of .*m\.onnx must be one of"),
        ({"model_config": "{\"input\": {\"size_divisibility\": 0}}"}, r"'input\.size_divisibility' in .*m\.onnx"),
        ({"class_metadata": "{\"names\": []}"}, r"class metadata in .*m\.onnx lacks colors"),
    ],
)
def test_bad_onnx_metadata_is_refused_at_load(tmp_path: Path, props: dict[str, str], message: str) -> None:
    from ros_seg.inference.onnx_export import OnnxModelError, read_onnx_info

    path = _onnx_with_metadata(tmp_path / "m.onnx", **props)
    with pytest.raises(OnnxModelError, match=message):
        read_onnx_info(path)
