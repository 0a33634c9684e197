"""Named models: a name like `pem_r50` maps to ros_seg/configs/models/pem_r50.yaml, which the family
its `meta_architecture` names builds (ros_seg.models.families). `--model` also accepts the path of a
config file.
"""
from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from ros_seg.models.class_metadata import ClassMetadata
from ros_seg.models.families import model_family
from ros_seg.models.model_config import ModelConfig
from ros_seg.models.strict_config import ConfigError

# The model configs ship inside the package (package data of the wheel, installed with the
# Python sources by colcon), so every way of installing ros_seg knows the same names.
PACKAGE_CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "models"


def config_dirs() -> list[Path]:
    """Where named model configs are looked up, in order: $ROS_SEG_CONFIG_DIR, then the package's own."""
    dirs = []
    if os.environ.get("ROS_SEG_CONFIG_DIR"):
        dirs.append(Path(os.environ["ROS_SEG_CONFIG_DIR"]))
    dirs.append(PACKAGE_CONFIG_DIR)
    return dirs


def model_names() -> list[str]:
    """Every model name with a config file in the config directories."""
    names = set()
    for d in config_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def resolve_config(model: str) -> Path:
    """Config file of a model name or path; ConfigError listing the known names otherwise."""
    if model.endswith((".yaml", ".yml")) or os.sep in model:
        path = Path(model)
        if not path.is_file():
            raise ConfigError(f"model config file {path} does not exist")
        return path
    for d in config_dirs():
        path = d / f"{model}.yaml"
        if path.is_file():
            return path
    raise ConfigError(f"unknown model {model!r}: choose one of {model_names()} or give a config file path")


def load_model_config(model: str) -> ModelConfig:
    """ModelConfig of a model name or config path."""
    return ModelConfig.from_yaml(resolve_config(model))


def build_model(config: ModelConfig) -> tuple[nn.Module, ClassMetadata]:
    """A freshly initialized model of `config` (built by its family, see ros_seg.models.families) and its label set."""
    family = model_family(config)
    return family.build(), family.metadata
