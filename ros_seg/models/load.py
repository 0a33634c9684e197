"""Build a model by name and/or from a checkpoint: the one way every tool gets a model."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ros_seg.models.checkpoint import CheckpointError, load_weights, read_checkpoint
from ros_seg.models.class_metadata import ClassMetadata
from ros_seg.models.mask_former import MaskFormer
from ros_seg.models.model_config import ModelConfig
from ros_seg.models.registry import build_model, load_model_config

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A model ready for inference, with what describes it."""

    model: MaskFormer
    config: ModelConfig
    metadata: ClassMetadata
    weights: Path | None


def load_model(model: str | None = None, weights: str | Path | None = None) -> LoadedModel:
    """A model from a name or config path, a checkpoint, or both.

    With weights, the checkpoint's own config builds the model; a `model` name
    given as well must match it. Without weights the model has random weights
    (useful for speed and memory measurements only), and a warning says so.
    """
    if weights is None:
        if model is None:
            raise ValueError("give a model name (e.g. pem_stdc1) or a weights file")
        config = load_model_config(model)
        net, metadata = build_model(config)
        log.warning("model %s has random weights (no weights file given): outputs are meaningless", config.name)
        return LoadedModel(net.eval(), config, metadata, None)
    ckpt = read_checkpoint(weights)
    if model is not None and not model.endswith((".yaml", ".yml")) and model != ckpt.config.name:
        raise CheckpointError(
            f"weights file {weights} holds model {ckpt.config.name!r}, but model {model!r} was requested: "
            f"set the model to {ckpt.config.name!r} or use weights of {model!r}"
        )
    net, _ = build_model(ckpt.config)
    load_weights(net, ckpt.state_dict, str(weights))
    return LoadedModel(net.eval(), ckpt.config, ckpt.metadata, Path(weights))
