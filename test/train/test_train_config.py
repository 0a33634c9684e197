"""Training configs: strict keys and values, configs that extend a `_base_`, the shipped recipes and the
demo checkpoint's stage configs."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from ros_seg.models.strict_config import ConfigError
from ros_seg.train.train_config import LossConfig, TrainConfig

from repo_paths import REPO_ROOT

ROOT = REPO_ROOT
RECIPES = ROOT / "config" / "train"
# The demo checkpoint's training stages, in order (stage07b: the probe between stages 7 and 8).
DEMO_STAGES = ROOT / "benchmarks" / "results" / "demo_training"
DEMO_STAGE_NAMES = [
    "stage01_from_scratch", "stage02_resume_9000", "stage03_resume_17000", "stage04_resume_25000",
    "stage05_warm_restart", "stage06_warm_restart", "stage07_scale075", "stage07b_fullcrop_probe",
    "stage08_fullcrop", "stage09_tram", "stage10_moto",
]


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
        ("_base_: absent.yaml\n", r"'_base_' in .*top\.yaml names '.*absent\.yaml', which does not exist"),
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


def test_cityscapes_recipes_that_extend_a_base_differ_from_it_only_in_the_model() -> None:
    pem_r50 = TrainConfig.from_yaml(RECIPES / "pem_r50_cityscapes.yaml")
    m2f_r50 = TrainConfig.from_yaml(RECIPES / "m2f_r50_cityscapes.yaml")
    for name, base in [("pem_stdc1", pem_r50), ("pem_stdc2", pem_r50), ("proscale_r50_333", m2f_r50)]:
        config = TrainConfig.from_yaml(RECIPES / f"{name}_cityscapes.yaml")
        assert config.model == name and dataclasses.replace(config, model=base.model) == base


def demo_stage(name: str) -> TrainConfig:
    return TrainConfig.from_yaml(DEMO_STAGES / f"{name}.yaml")


def test_demo_stage_configs_are_resolved_in_full() -> None:
    """Each stage file states every key, so neither a _base_ nor a changed default can alter what it trained."""
    paths = sorted(DEMO_STAGES.glob("*.yaml"))
    assert [path.stem for path in paths] == DEMO_STAGE_NAMES
    history = (DEMO_STAGES.parent / "demo_training.md").read_text()
    for path in paths:
        text = path.read_text()
        assert yaml.safe_load(text) == TrainConfig.from_yaml(path).to_dict(), path.name
        assert f"--config benchmarks/results/demo_training/{path.name}" in text, path.name
        assert f"demo_training/{path.name}" in history, path.name


def test_demo_stages_differ_where_the_history_says() -> None:
    first = demo_stage("stage01_from_scratch")
    assert (first.model, first.seed, first.imagenet_weights, first.best_metric) == ("pem_stdc1", 0, None, None)
    assert (first.data.crop_size, first.data.scale_range, first.data.eval_size) == ([128, 256], [0.5, 2.0], [256, 512])
    solver = first.solver
    assert (solver.batch_size, solver.max_iters, solver.base_lr, solver.backbone_lr_multiplier) == (4, 5000, 4e-4, 1.0)
    assert (solver.schedule, solver.warmup_iters, solver.warmup_factor) == ("cosine", 200, 0.1)
    assert first.loss == dataclasses.replace(LossConfig(), num_points=2048)

    def changed(config: TrainConfig, data: dict | None = None, solver: dict | None = None, **top) -> TrainConfig:
        return dataclasses.replace(
            config, data=dataclasses.replace(config.data, **(data or {})),
            solver=dataclasses.replace(config.solver, **(solver or {})), **top,
        )

    # Stages 2-4 resume stage 1's run with longer schedules.
    for name, max_iters in [("stage02_resume_9000", 9000), ("stage03_resume_17000", 17000),
                            ("stage04_resume_25000", 25000)]:
        assert demo_stage(name) == changed(first, solver={"max_iters": max_iters})
    # Warm restarts, each from the weights of the one before.
    fifth = demo_stage("stage05_warm_restart")
    assert fifth == changed(first, seed=5, solver={"max_iters": 7000, "base_lr": 0.00015})
    sixth = demo_stage("stage06_warm_restart")
    assert sixth == changed(fifth, seed=6, solver={"max_iters": 6000})
    assert demo_stage("stage07_scale075") == changed(sixth, seed=7, data={"scale_range": [0.75, 2.0]})
    eighth = demo_stage("stage08_fullcrop")
    assert eighth == changed(fifth, seed=9, best_metric="pq", data={"crop_size": [256, 512]},
                             solver={"batch_size": 2, "max_iters": 5000, "base_lr": 0.0001})
    assert demo_stage("stage07b_fullcrop_probe") == changed(
        eighth, seed=8, best_metric=None, eval_period=800, checkpoint_period=400,
        solver={"max_iters": 1600, "warmup_iters": 100},
    )
    ninth = demo_stage("stage09_tram")
    assert ninth == changed(eighth, seed=10, data={"repeat_factor_threshold": 0.5})
    assert demo_stage("stage10_moto") == changed(ninth, seed=11, data={"repeat_factor_threshold": 0.3})
