"""Speed of the pixel decoders (the "encoder" of the PRO-SCALE paper) of several models on the same features."""
from __future__ import annotations

from functools import partial
from typing import Any

import torch

from ros_seg.bench.timing import time_interleaved
from ros_seg.eval.machine_info import machine_info
from ros_seg.models.backbones import build_backbone
from ros_seg.models.mask_former_family import PIXEL_DECODERS
from ros_seg.models.registry import load_model_config

DEFAULT_MODELS = ("m2f_r50", "proscale_r50_111", "proscale_r50_222", "proscale_r50_333")


def bench_encoders(
    models: tuple[str, ...] = DEFAULT_MODELS,
    size: tuple[int, int] = (512, 1024),
    device: str = "cpu",
    warmup: int = 1,
    repeats: int = 5,
) -> dict[str, Any]:
    """Time the forward of each model's pixel decoder on one set of backbone features, interleaved.

    The models must share a backbone; it runs once (randomly initialized) on a random image of
    `size` to make the res2..res5 features every pixel decoder then reads. Each repeat times
    every model once, so they share the machine's noise. Runs in eval mode without autograd.

    Args:
        models: model names or config paths; the first is the baseline of the ratios.
        size: input image (H, W); multiples of 32.
        device: torch device string, e.g. "cpu" or "cuda".
        warmup: untimed calls of each pixel decoder before timing.
        repeats: timed calls of each pixel decoder.

    Returns:
        {"op": "encoders", "size", "device", "baseline", "models": {name: {"encoder_ms": latency
        stats, "ratio": p50 / the baseline's p50}}, "machine"}.
    """
    if not models:
        raise ValueError("bench_encoders: give at least one model")
    torch_device = torch.device(device)
    configs = {name: load_model_config(name) for name in models}
    backbones = {config.backbone.name for config in configs.values()}
    if len(backbones) != 1:
        raise ValueError(f"bench_encoders: the models must share a backbone, got {sorted(backbones)}")
    backbone = build_backbone(backbones.pop()).to(torch_device).eval()
    in_channels = tuple(backbone.out_channels[k] for k in ("res2", "res3", "res4", "res5"))
    decoders = {
        name: PIXEL_DECODERS[config.pixel_decoder.name](in_channels, config.pixel_decoder).to(torch_device).eval()
        for name, config in configs.items()
    }
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(1, 3, *size, generator=generator).to(torch_device)
    with torch.no_grad():
        features = backbone(image)
        stats = time_interleaved({name: partial(d, features) for name, d in decoders.items()}, warmup, repeats,
                                 torch_device)
    baseline = models[0]
    return {
        "op": "encoders",
        "size": list(size),
        "device": device,
        "baseline": baseline,
        "models": {
            name: {"encoder_ms": s, "ratio": round(s["p50"] / stats[baseline]["p50"], 3)} for name, s in stats.items()
        },
        "machine": machine_info(torch_device),
    }
