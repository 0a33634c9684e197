"""Training configs: strict keys and values, and configs that extend a `_base_`."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ros_seg.models.strict_config import ConfigError
from ros_seg.train.train_config import TrainConfig


def test_training_config_is_strict(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("model: pem_stdc1\ndata:\n  crop_size: [64, 128]\n  eval_size: null\n  val_split: null\n")
    config = TrainConfig.from_yaml(path)
    assert config.data.crop_size == [64, 128] and config.data.val_split is None
    assert config.solver.clip_grad_norm == 0.01 and config.loss.num_points == 12544
    for text, message in [
        ("model: pem_stdc1\nlr: 0.1\n", r"unknown key\(s\) \['lr'\] in .*run\.yaml"),
        ("data:\n  crop: [1, 2]\n", r"\['crop'\] in section 'data' of .*run\.yaml"),
        ("solver:\n  batch_size: two\n", r"'solver\.batch_size' in .*run\.yaml must be int"),
        ("solver:\n  schedule: step\n", r"'solver\.schedule' .* one of"),
        ("data:\n  crop_size: [64]\n", r"'data\.crop_size'"),
        ("- a list\n", "must be a YAML mapping"),
    ]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            TrainConfig.from_yaml(path)
    with pytest.raises(ConfigError, match="cannot read"):
        TrainConfig.from_yaml(tmp_path / "missing.yaml")


def test_training_config_extends_its_base(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(
        "model: pem_stdc1\nseed: 3\ndata:\n  crop_size: [64, 128]\n  scale_range: [0.5, 2.0]\n"
        "solver:\n  base_lr: 0.0004\n  max_iters: 100\n")
    (tmp_path / "nested").mkdir()
    middle = tmp_path / "nested" / "middle.yaml"
    middle.write_text("_base_: ../base.yaml\nsolver:\n  max_iters: 200\n")
    top = tmp_path / "nested" / "top.yaml"
    top.write_text("_base_: middle.yaml\nseed: 4\ndata:\n  scale_range: [1.0, 1.0]\n")
    config = TrainConfig.from_yaml(top)
    # Mappings merge key by key through the chain; lists and scalars replace the base's.
    assert config.seed == 4 and config.model == "pem_stdc1"
    assert config.data.crop_size == [64, 128] and config.data.scale_range == [1.0, 1.0]
    assert config.solver.base_lr == 0.0004 and config.solver.max_iters == 200

    # A wrong key anywhere in the chain names the file and its bases.
    (tmp_path / "base.yaml").write_text("model: pem_stdc1\nsolver:\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match=r"\['lr'\] in section 'solver' of .*top\.yaml \(with its _base_ "
                                          r".*middle\.yaml, .*base\.yaml\)"):
        TrainConfig.from_yaml(top)
    for text, message in [
        ("_base_: absent.yaml\n", r"'_base_: absent\.yaml' in .*top\.yaml names .*absent\.yaml, which does not exist"),
        ("_base_: [a.yaml]\n", r"'_base_' in .*top\.yaml must be the name of the YAML file it extends"),
        ("_base_: top.yaml\n", r"extends itself through _base_: .*top\.yaml -> .*top\.yaml"),
    ]:
        top.write_text(text)
        with pytest.raises(ConfigError, match=message):
            TrainConfig.from_yaml(top)
    middle.write_text("_base_: top.yaml\n")
    top.write_text("_base_: middle.yaml\n")
    with pytest.raises(ConfigError, match=r"top\.yaml -> .*middle\.yaml -> .*top\.yaml"):
        TrainConfig.from_yaml(top)


def test_shipped_configs_that_extend_a_base_differ_from_it_only_where_they_say() -> None:
    root = Path(__file__).resolve().parents[1] / "config" / "train"
    stdc1 = TrainConfig.from_yaml(root / "pem_stdc1_cityscapes.yaml")
    r50 = TrainConfig.from_yaml(root / "pem_r50_cityscapes.yaml")
    assert stdc1.model == "pem_stdc1" and dataclasses.replace(stdc1, model="pem_r50") == r50
    finetune = TrainConfig.from_yaml(root / "pem_stdc1_synth_finetune.yaml")
    demo = TrainConfig.from_yaml(root / "pem_stdc1_synth.yaml")
    assert finetune.data == demo.data and finetune.loss == demo.loss
    assert (finetune.solver.max_iters, finetune.solver.base_lr) == (7000, 0.00015)
    restored = dataclasses.replace(finetune.solver, max_iters=demo.solver.max_iters, base_lr=demo.solver.base_lr)
    assert restored == demo.solver
    fullcrop = TrainConfig.from_yaml(root / "pem_stdc1_synth_fullcrop.yaml")
    assert fullcrop.data == dataclasses.replace(finetune.data, crop_size=[256, 512])
    assert fullcrop.solver == dataclasses.replace(
        finetune.solver, batch_size=2, max_iters=5000, base_lr=0.0001
    )
    assert (fullcrop.seed, fullcrop.best_metric, fullcrop.loss) == (9, "pq", finetune.loss)
    probe = TrainConfig.from_yaml(root / "pem_stdc1_synth_fullcrop_probe.yaml")
    assert probe.solver == dataclasses.replace(fullcrop.solver, max_iters=1600, warmup_iters=100)
    assert (probe.eval_period, probe.checkpoint_period, probe.best_metric) == (800, 400, None)
    tram = TrainConfig.from_yaml(root / "pem_stdc1_synth_tram.yaml")
    assert tram.data == dataclasses.replace(fullcrop.data, repeat_factor_threshold=0.5)
    assert dataclasses.replace(tram, seed=9, data=fullcrop.data) == fullcrop
    moto = TrainConfig.from_yaml(root / "pem_stdc1_synth_moto.yaml")
    assert dataclasses.replace(moto, seed=10, data=tram.data) == tram
    assert moto.data == dataclasses.replace(tram.data, repeat_factor_threshold=0.3)
    scale075 = TrainConfig.from_yaml(root / "pem_stdc1_synth_scale075.yaml")
    assert scale075.data == dataclasses.replace(finetune.data, scale_range=[0.75, 2.0])
    assert (scale075.seed, scale075.solver.max_iters) == (7, 6000)
