"""Loading ImageNet-pretrained weights from local files into our backbones.

ResNet-50 reads a torchvision-layout state dict (`conv1`, `bn1`, `layerK.J.convI`,
`layerK.J.bnI`, `layerK.J.downsample.{0,1}`; `fc` is ignored) and renames it to
the detectron2 layout of `resnet.py`. STDC reads the STDC authors' ImageNet
checkpoints (`features.N.*`; the classifier and the `x2`..`x32` aliases are
ignored). Either file may wrap its tensors under "state_dict" and prefix keys
with `module.` (DataParallel).
"""

import logging
import re
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .resnet import ResNet
from .stdc import STDCNet

logger = logging.getLogger(__name__)

# torchvision ResNet names -> detectron2 layout (`layerK` becomes `res{K+1}`).
_TORCHVISION_STEM = {"conv1": "stem.conv1", "bn1": "stem.conv1.norm"}
_TORCHVISION_BLOCK_PARTS = {
    "conv1": "conv1",
    "conv2": "conv2",
    "conv3": "conv3",
    "bn1": "conv1.norm",
    "bn2": "conv2.norm",
    "bn3": "conv3.norm",
    "downsample.0": "shortcut",
    "downsample.1": "shortcut.norm",
}
_TORCHVISION_BLOCK_KEY = re.compile(r"layer(\d)\.(\d+)\.(conv\d|bn\d|downsample\.[01])\.(\w+)")
_TORCHVISION_IGNORED = ("fc.",)
_STDC_IGNORED = ("conv_last.", "fc.", "bn.", "linear.", "x2.", "x4.", "x8.", "x16.", "x32.")


def _torchvision_to_detectron2(key: str) -> str | None:
    """Our ResNet key for a torchvision one (unknown keys pass unchanged), or None for the classifier."""
    if key.startswith(_TORCHVISION_IGNORED):
        return None
    module, _, tensor = key.partition(".")
    if module in _TORCHVISION_STEM:
        return f"{_TORCHVISION_STEM[module]}.{tensor}"
    match = _TORCHVISION_BLOCK_KEY.fullmatch(key)
    if match is None:
        return key
    layer, block, part, tensor = match.groups()
    return f"res{int(layer) + 1}.{block}.{_TORCHVISION_BLOCK_PARTS[part]}.{tensor}"


def _stdc_key(key: str) -> str | None:
    """Our STDC key for an STDC-authors' one, or None for the classifier and the aliases."""
    return None if key.startswith(_STDC_IGNORED) else key


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, unwrapped from "state_dict" and a `module.` prefix."""
    if not path.is_file():
        raise FileNotFoundError(f"ImageNet weights file {str(path)!r} does not exist")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{str(path)!r} holds a {type(checkpoint).__name__}, not a state dict")
    return {
        key.removeprefix("module."): value
        for key, value in checkpoint.items()
        if isinstance(value, torch.Tensor)
    }


def load_imagenet_weights(backbone: nn.Module, path: str | Path) -> None:
    """Copies ImageNet weights from the file `path` into `backbone` (a ResNet or an STDCNet).

    Raises ValueError naming every backbone tensor that the file lacks or holds
    with another shape; keys the file has beyond the backbone are logged and
    skipped. BatchNorm `num_batches_tracked` counters are optional.
    """
    path = Path(path)
    rename: Callable[[str], str | None]
    if isinstance(backbone, ResNet):
        rename = _torchvision_to_detectron2
    elif isinstance(backbone, STDCNet):
        rename = _stdc_key
    else:
        raise ValueError(
            f"no ImageNet weight layout is known for {type(backbone).__name__}; use ResNet or STDCNet"
        )
    source = _read_state_dict(path)
    target = backbone.state_dict()
    loaded: dict[str, torch.Tensor] = {}
    file_keys: dict[str, str] = {}
    ignored: list[str] = []
    unexpected: list[str] = []
    for key, value in source.items():
        name = rename(key)
        if name is None:
            ignored.append(key)
        elif name in target:
            loaded[name] = value
            file_keys[name] = key
        else:
            unexpected.append(key)
    problems = []
    for name, tensor in target.items():
        if name not in loaded:
            if not name.endswith("num_batches_tracked"):
                problems.append(f"{name}: expected {tuple(tensor.shape)}, found missing")
        elif loaded[name].shape != tensor.shape:
            problems.append(
                f"{name} (file key {file_keys[name]}): expected {tuple(tensor.shape)}, "
                f"found {tuple(loaded[name].shape)}"
            )
    if problems:
        raise ValueError(
            f"ImageNet weights {str(path)!r} do not fit {type(backbone).__name__} "
            f"({len(problems)} tensors):\n  " + "\n  ".join(problems)
        )
    backbone.load_state_dict({**target, **loaded})
    logger.info(
        "loaded %d tensors from %s into %s; ignored %d (classifier / aliases), %d unknown",
        len(loaded), path, type(backbone).__name__, len(ignored), len(unexpected),
    )
    if unexpected:
        logger.warning(
            "keys in %s that %s does not use: %s", path, type(backbone).__name__, ", ".join(unexpected)
        )
