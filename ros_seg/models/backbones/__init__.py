"""Backbones: images in, a dict of stride 4/8/16/32 feature maps (`res2`..`res5`) out."""

from collections.abc import Callable

from torch import nn

from .resnet import ResNet, resnet50
from .stdc import STDCNet, stdc1, stdc2

__all__ = ["BACKBONES", "ResNet", "STDCNet", "build_backbone", "resnet50", "stdc1", "stdc2"]

BACKBONES: dict[str, Callable[..., nn.Module]] = {"resnet50": resnet50, "stdc1": stdc1, "stdc2": stdc2}


def build_backbone(name: str, **kwargs: int) -> nn.Module:
    """Builds the backbone called `name` ("resnet50", "stdc1" or "stdc2"); kwargs go to its builder."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid names: {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name](**kwargs)
