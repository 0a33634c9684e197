"""Read the checkpoint files the authors of PEM, Mask2Former, PRO-SCALE and Panoptic SegFormer publish.

The container is recognized from the file's content, not its name:
- detectron2 model-zoo `.pkl` (Mask2Former): a pickle of {"model": {name: numpy array},
  "__author__": ..., optionally "matching_heuristics"}; read with ros_seg.models.numpy_pickle,
  which runs no code from the file;
- detectron2 checkpointer `.pth` (PEM, PRO-SCALE): torch.save of {"model": {name: tensor},
  "iteration": ..., possibly "trainer"/"optimizer"};
- mmcv `.pth` (Panoptic SegFormer): torch.save of {"meta": ..., "state_dict": {name: tensor}}.
torch files are read with `torch.load(weights_only=True)`. Top-level entries
other than the weights are ignored.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ros_seg.models.checkpoint import CheckpointError
from ros_seg.models.numpy_pickle import UnsafePickleError, load_numpy_pickle

MODEL_ZOO_PICKLE = "detectron2 model-zoo pickle"
DETECTRON2 = "detectron2 checkpoint"
MMCV = "mmcv checkpoint"


@dataclass
class OfficialCheckpoint:
    """The weights of an official checkpoint file and the container they came in.

    Args:
        container: MODEL_ZOO_PICKLE, DETECTRON2 or MMCV.
        weights: tensor name -> tensor (torch files) or numpy array (pickles), in file order.
    """

    container: str
    weights: dict[str, torch.Tensor | np.ndarray]


def read_official_checkpoint(path: str | Path) -> OfficialCheckpoint:
    """The weights of a published checkpoint file, its container recognized from the content."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if zipfile.is_zipfile(path):
        data = _load_torch_file(path)
    else:
        try:
            data = load_numpy_pickle(path)
        except UnsafePickleError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        except Exception as exc:  # truncated or not a pickle at all
            reason = " ".join(str(exc).split())  # one line (pickle's messages may span two)
            raise CheckpointError(f"cannot read {path} as a torch file or a pickle of numpy arrays "
                                  f"({type(exc).__name__}: {reason}); is it a complete checkpoint?") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a {type(data).__name__}, not a checkpoint dictionary")
    if "state_dict" in data and "model" not in data:
        container, weights = MMCV, data["state_dict"]
    elif "model" in data:
        container, weights = (DETECTRON2 if zipfile.is_zipfile(path) else MODEL_ZOO_PICKLE), data["model"]
    else:
        raise CheckpointError(f"{path} has no 'model' (detectron2) or 'state_dict' (mmcv) entry: "
                              f"found {sorted(map(str, data))[:10]}")
    if not isinstance(weights, dict) or not weights:
        raise CheckpointError(f"{path} holds no weights in its {container}")
    bad = next((k for k, v in weights.items() if not isinstance(v, torch.Tensor | np.ndarray)), None)
    if bad is not None:
        raise CheckpointError(f"{path}: {bad!r} holds a {type(weights[bad]).__name__}, not a tensor")
    return OfficialCheckpoint(container, dict(weights))


def _load_torch_file(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file or objects beyond plain tensors
        raise CheckpointError(
            f"cannot read {path} with weights_only=True ({type(exc).__name__}: {exc}); if it holds training "
            "state beyond the weights, save just its weights: torch.save({'model': ckpt['model']}, 'model.pth')"
        ) from None
