"""Import a checkpoint the authors published (PEM, Mask2Former, PRO-SCALE, Panoptic SegFormer) into a
ros_seg model.

One function serves `ros-seg convert --from-official / --from-detectron2` and `ros-seg zoo pull`:
read the file (its container recognized from the content), rename its tensors by the rules of the
model's kind (PEM's detectron2 layout, Mask2Former / PRO-SCALE, or Panoptic SegFormer's mmcv file),
load them into a freshly built model of the named config, refusing missing, mis-shaped or unknown
tensors with their names.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ros_seg.models.checkpoint import CheckpointError, load_weights
from ros_seg.models.class_metadata import ClassMetadata
from ros_seg.models.detectron2_import import convert_detectron2_state_dict
from ros_seg.models.key_renaming import RenamedWeights
from ros_seg.models.mask2former_import import convert_mask2former_state_dict
from ros_seg.models.model_config import ModelConfig
from ros_seg.models.official_checkpoint_file import DETECTRON2, MMCV, MODEL_ZOO_PICKLE, read_official_checkpoint
from ros_seg.models.panoptic_segformer_import import convert_panoptic_segformer_state_dict
from ros_seg.models.registry import build_model, load_model_config


@dataclass
class ImportedModel:
    """A ros_seg model holding an official checkpoint's weights.

    Args:
        model: the model, weights loaded.
        config: its config.
        metadata: its label set.
        container: the official file's container (MODEL_ZOO_PICKLE, DETECTRON2 or MMCV).
        tensors: how many tensors the file held.
        dropped: names of the file's tensors the model does not use (training-only or duplicates).
    """

    model: nn.Module
    config: ModelConfig
    metadata: ClassMetadata
    container: str
    tensors: int
    dropped: list[str]


def import_official_checkpoint(source: str | Path, model: str, detectron2_only: bool = False) -> ImportedModel:
    """The ros_seg model `model` (name or config path) with the weights of the official file `source`.

    CheckpointError, naming the file, for a file that is no checkpoint, of another container
    (with `detectron2_only`: anything but detectron2 files), or whose tensors do not fit the model.
    """
    config = load_model_config(model)
    net, metadata = build_model(config)
    official = read_official_checkpoint(source)
    if detectron2_only and official.container not in (DETECTRON2, MODEL_ZOO_PICKLE):
        raise CheckpointError(f"{source} is an {official.container}, not a detectron2 checkpoint: "
                              "use --from-official")
    renamed = _rename(official.container, official.weights, config, net.state_dict(), str(source))
    load_weights(net, renamed.tensors, str(source))
    return ImportedModel(net, config, metadata, official.container, len(official.weights), renamed.dropped)


def _rename(container: str, weights: dict, config: ModelConfig, expected: dict, source: str) -> RenamedWeights:
    """The official `weights` under the names of `config`'s model, by the rules of its kind of model."""
    if config.meta_architecture == "panoptic_segformer" or container == MMCV:
        if config.meta_architecture != "panoptic_segformer" or container != MMCV:
            raise CheckpointError(
                f"{source} ({container}) cannot be imported into {config.name}: official Panoptic SegFormer "
                "checkpoints are mmcv files and fit only a panoptic_segformer model "
                "(e.g. --model panoptic_segformer_r50_coco)"
            )
        return convert_panoptic_segformer_state_dict(weights, expected, source)
    if config.pixel_decoder.name == "pem":
        return convert_detectron2_state_dict(weights, expected, source)
    return convert_mask2former_state_dict(weights, expected, source)
