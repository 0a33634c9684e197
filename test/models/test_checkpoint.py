"""ros_seg checkpoints, model configs and the detectron2 importer."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from ros_seg.cli import main
from ros_seg.models.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from ros_seg.models.load import load_model
from ros_seg.models.model_config import ModelConfig
from ros_seg.models.registry import build_model, load_model_config, resolve_config
from ros_seg.models.strict_config import ConfigError


def _saved(tmp_path: Path, name: str = "pem_stdc1", storage: str = "fp32") -> tuple[Path, torch.nn.Module]:
    config = load_model_config(name)
    model, meta = build_model(config)
    path = tmp_path / f"{name}.pt"
    save_checkpoint(path, model, config, meta, extra={"note": "test"}, storage=storage)
    return path, model


def test_round_trip_rebuilds_the_same_model(tmp_path: Path) -> None:
    path, model = _saved(tmp_path)
    loaded = load_model(weights=path)
    assert loaded.config.name == "pem_stdc1" and loaded.metadata.num_classes == 19
    x = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x)["pred_masks"], model.eval()(x)["pred_masks"])
    assert read_checkpoint(path).extra == {"note": "test"}
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write leaves no temporary file


def test_half_checkpoint_loads_into_fp32_model(tmp_path: Path) -> None:
    path, _ = _saved(tmp_path, storage="fp16")
    assert read_checkpoint(path).state_dict["transformer_decoder.query_feat.weight"].dtype == torch.float16
    assert next(load_model(weights=path).model.parameters()).dtype == torch.float32


def test_int8_checkpoint_is_small_and_close(tmp_path: Path) -> None:
    path32, model = _saved(tmp_path)
    path8 = tmp_path / "int8.pt"
    assert main(["convert", "--from-checkpoint", str(path32), "--storage", "int8", "--out", str(path8)]) == 0
    assert path8.stat().st_size < 0.3 * path32.stat().st_size
    loaded = load_model(weights=path8).model.state_dict()
    for key, value in model.state_dict().items():
        if value.is_floating_point():
            # per-channel int8: error at most half a step of the channel's scale
            step = value.flatten(1).abs().amax(1) / 127 if value.dim() >= 2 else value.abs().max() / 1000
            diff = loaded[key] - value
            err = diff.flatten(1).abs().amax(1) if value.dim() >= 2 else diff.abs().max()
            assert bool((err <= step * 0.51 + 1e-3 * value.abs().max()).all()), key


def test_model_name_must_match_checkpoint(tmp_path: Path) -> None:
    path, _ = _saved(tmp_path)
    with pytest.raises(CheckpointError, match="holds model 'pem_stdc1'"):
        load_model("pem_r50", path)


def test_unreadable_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        read_checkpoint(junk)
    foreign = tmp_path / "d2.pth"
    torch.save({"model": {"a": torch.zeros(1)}}, foreign)
    with pytest.raises(CheckpointError, match="detectron2"):
        read_checkpoint(foreign)


def test_missing_and_misshaped_tensors_are_listed(tmp_path: Path) -> None:
    path, _ = _saved(tmp_path)
    data = torch.load(path, weights_only=True)
    del data["tensor_checksum"]  # as a checkpoint written before checksums, so the tensors are checked one by one
    del data["state_dict"]["transformer_decoder.class_embed.bias"]
    data["state_dict"]["transformer_decoder.query_feat.weight"] = torch.zeros(50, 256)
    torch.save(data, path)
    with pytest.raises(CheckpointError) as err:
        load_model(weights=path)
    assert "missing tensors: transformer_decoder.class_embed.bias" in str(err.value)
    assert "transformer_decoder.query_feat.weight: expected (100, 256), found (50, 256)" in str(err.value)


def test_config_unknown_keys_and_types(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntransformer_decoder:\n  num_layer: 6\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['num_layer'\] in section 'transformer_decoder'"):
        ModelConfig.from_yaml(bad)
    bad.write_text("name: x\ntransformer_decoder:\n  num_layers: six\n")
    with pytest.raises(ConfigError, match="'transformer_decoder.num_layers' .* must be int"):
        ModelConfig.from_yaml(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        ModelConfig.from_yaml(bad)
    with pytest.raises(ConfigError, match="unknown model 'pem_r51'"):
        load_model_config("pem_r51")


def test_model_configs_extend_a_base(tmp_path: Path) -> None:
    stdc1, stdc2 = load_model_config("pem_stdc1"), load_model_config("pem_stdc2")
    assert (stdc2.name, stdc2.backbone.name) == ("pem_stdc2", "stdc2")
    assert stdc2.transformer_decoder == stdc1.transformer_decoder and stdc2.pixel_decoder == stdc1.pixel_decoder
    p111, p333 = load_model_config("proscale_r50_111"), load_model_config("proscale_r50_333")
    assert p333.pixel_decoder.proscale_layers == [3, 3, 3] and p333.pixel_decoder.lpe and p333.pixel_decoder.trc
    assert p333.transformer_decoder == p111.transformer_decoder and p333.backbone == p111.backbone
    # A user's config may extend a shipped one by path; a wrong key in it names the file and its base.
    mine = tmp_path / "mine.yaml"
    mine.write_text(f"_base_: {resolve_config('pem_stdc1')}\n"
                    "name: pem_stdc1_q50\ntransformer_decoder:\n  num_queries: 50\n")
    config = ModelConfig.from_yaml(mine)
    assert config.transformer_decoder.num_queries == 50 and config.transformer_decoder.num_layers == 6
    mine.write_text("_base_: pem_stdc1.yaml\nname: x\n")
    with pytest.raises(ConfigError, match=r"mine\.yaml names .*pem_stdc1\.yaml', which does not exist"):
        ModelConfig.from_yaml(mine)


# --- detectron2 import: a checkpoint written in the authors' key layout ---------------------------


def _authors_pixel_decoder_name(ours: str) -> str:
    """Authors' PEM_Pixel_Decoder key of one of our pixel decoder keys (layout of their code)."""
    rules = [
        (r"in_projections\.(\d+)\.norm\.", r"in_projections.\1.bn."),
        (r"global_context\.conv\.", "conv_avg.conv."),
        (r"global_context\.norm\.", "conv_avg.bn."),
        (r"csm\.(\d+)\.reduce\.", r"csm.\1.mlp.0.mlp.0."),
        (r"csm\.(\d+)\.norm\.", r"csm.\1.mlp.0.mlp.1."),
        (r"csm\.(\d+)\.expand\.", r"csm.\1.mlp.0.mlp.3."),
        (r"deformable\.(\d+)\.offset\.", r"dcn.\1.dcn_offset."),
        (r"deformable\.(\d+)\.deform\.", r"dcn.\1.dcn."),
        (r"deformable\.(\d+)\.deform_norm\.", r"dcn.\1.dcn_bn."),
        (r"deformable\.(\d+)\.upsample\.", r"dcn.\1.up_sample."),
        (r"deformable\.(\d+)\.upsample_norm\.", r"dcn.\1.up_bn."),
        (r"mask_features\.conv\.", "out.conv."),
        (r"mask_features\.norm\.", "out.bn."),
    ]
    for pattern, repl in rules:
        if re.match(pattern, ours):
            return re.sub(pattern, repl, ours)
    return ours


def _authors_predictor_name(ours: str, old_names: bool) -> str:
    feature, query = ("to_query", "to_key") if old_names else ("feature_proj", "query_proj")
    rules = [
        (
            r"cross_attention_layers\.(\d+)\.feature_proj\.norm\.",
            rf"transformer_cross_attention_layers.\1.{feature}.bn.",
        ),
        (
            r"cross_attention_layers\.(\d+)\.feature_proj\.local\.",
            rf"transformer_cross_attention_layers.\1.{feature}.to_query_3x3.",
        ),
        (
            r"cross_attention_layers\.(\d+)\.feature_proj\.linear\.",
            rf"transformer_cross_attention_layers.\1.{feature}.out.",
        ),
        (r"cross_attention_layers\.(\d+)\.query_proj\.", rf"transformer_cross_attention_layers.\1.{query}."),
        (r"cross_attention_layers\.(\d+)\.", r"transformer_cross_attention_layers.\1."),
        (r"self_attention_layers\.(\d+)\.attn\.", r"transformer_self_attention_layers.\1.self_attn."),
        (r"self_attention_layers\.(\d+)\.norm\.", r"transformer_self_attention_layers.\1.norm."),
        (r"ffn_layers\.(\d+)\.", r"transformer_ffn_layers.\1."),
    ]
    for pattern, repl in rules:
        if re.match(pattern, ours):
            return re.sub(pattern, repl, ours)
    return ours


def _authors_checkpoint(model: torch.nn.Module, stdc: bool, old_names: bool) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        part, rest = key.split(".", 1)
        if part == "backbone":
            out[key] = value.clone()
            if stdc:  # STDC checkpoints repeat every tensor under the x2/x4/x8/x16/x32 aliases
                idx, tail = rest.split(".", 2)[1], rest.split(".", 2)[2]
                i = int(idx)
                alias = (
                    ("x2", 0) if i < 1 else ("x4", 1) if i < 2 else ("x8", 2) if i < 4 else ("x16", 4) if i < 6
                    else ("x32", 6)
                )
                out[f"backbone.{alias[0]}.0.{i - alias[1]}.{tail}"] = value.clone()
        elif part == "pixel_decoder":
            out["sem_seg_head.pixel_decoder." + _authors_pixel_decoder_name(rest)] = value.clone()
        else:
            name = _authors_predictor_name(rest, old_names)
            if name.endswith(".alpha"):
                value = value.view(1, 1, -1)
            out["sem_seg_head.predictor." + name] = value.clone()
    out["criterion.empty_weight"] = torch.ones(20)
    out["pixel_mean"] = torch.zeros(3, 1, 1)
    return out


@pytest.mark.parametrize("name, old_names", [("pem_stdc1", True), ("pem_stdc1", False)])
def test_convert_from_detectron2(tmp_path: Path, name: str, old_names: bool) -> None:
    model, _ = build_model(load_model_config(name))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    d2 = tmp_path / "model_final.pth"
    torch.save({"model": _authors_checkpoint(model, stdc=True, old_names=old_names), "iteration": 90000}, d2)
    out = tmp_path / "converted.pt"
    assert main(["convert", "--from-detectron2", str(d2), "--model", name, "--out", str(out)]) == 0
    loaded = load_model(weights=out)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[key], value)


def test_convert_reports_missing_and_unknown_tensors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model, _ = build_model(load_model_config("pem_stdc1"))
    weights = _authors_checkpoint(model, stdc=True, old_names=False)
    del weights["sem_seg_head.predictor.class_embed.weight"]
    weights["sem_seg_head.predictor.query_feat.weight"] = torch.zeros(10, 256)
    d2 = tmp_path / "model_final.pth"
    torch.save({"model": weights}, d2)
    rc = main(["convert", "--from-detectron2", str(d2), "--model", "pem_stdc1", "--out", str(tmp_path / "o.pt")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "missing tensors: transformer_decoder.class_embed.weight" in err
    assert "transformer_decoder.query_feat.weight: expected (100, 256), found (10, 256)" in err
    weights["sem_seg_head.predictor.mystery.weight"] = torch.zeros(1)
    torch.save({"model": weights}, d2)
    rc = main(["convert", "--from-detectron2", str(d2), "--model", "pem_stdc1", "--out", str(tmp_path / "o.pt")])
    assert rc == 2 and "unrecognized tensors" in capsys.readouterr().err
