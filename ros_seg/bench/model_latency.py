"""Latency and memory of a model through the Segmenter (end to end and model only)."""
from __future__ import annotations

import resource

import numpy as np
import torch

from ros_seg.bench.machine import machine_info
from ros_seg.bench.timing import latency_stats, time_calls
from ros_seg.inference.segmenter import Segmenter


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_model(
    model: str,
    size: tuple[int, int],
    device: str = "cpu",
    backend: str = "torch",
    precision: str = "fp32",
    weights: str | None = None,
    warmup: int = 2,
    repeats: int = 10,
    channels_last: bool = False,
) -> dict:
    """Time `Segmenter.segment` on a random (H, W, 3) image and the backend's model call alone."""
    seg = Segmenter(
        model=model, weights=weights, device=device, precision=precision, backend=backend, channels_last=channels_last
    )
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
    if seg.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(seg.device)
    stages: dict[str, list[float]] = {"preprocess": [], "infer": [], "postprocess": []}

    def segment_once() -> None:
        result = seg.segment(image, "rgb8")
        for k in stages:
            stages[k].append(result.timings[k])

    end_to_end = time_calls(segment_once, warmup, repeats, seg.device)
    stage_stats = {k: latency_stats(v[warmup:]) for k, v in stages.items()}
    result = {
        "model": seg.model_name,
        "backend": backend,
        "device": str(seg.device),
        "precision": precision,
        "size": list(size),
        "weights": str(weights) if weights else None,
        "repeats": repeats,
        "latency_ms": latency_stats(end_to_end),
        "model_latency_ms": stage_stats["infer"],
        "stage_latency_ms": stage_stats,
        "fps": round(1000.0 / latency_stats(end_to_end)["p50"], 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "machine": machine_info(seg.device),
    }
    if seg.device.type == "cuda":
        result["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(seg.device) / 2**20, 1)
    return result


def compare_backends(
    model: str,
    size: tuple[int, int],
    backends: list[str],
    device: str = "cpu",
    precision: str = "fp32",
    weights: str | None = None,
    warmup: int = 2,
    repeats: int = 10,
    channels_last: bool = False,
) -> dict:
    """:func:`bench_model` on each backend in turn, in this process, with speedups over the first backend.

    `speedup` maps each backend to (first backend's p50) / (its p50), end to end and model only.
    """
    runs = [
        bench_model(model, size, device, name, precision, weights, warmup, repeats, channels_last)
        for name in backends
    ]
    base = runs[0]
    for run in runs:
        run.pop("machine")
    speedup = {
        run["backend"]: {
            "end_to_end": round(base["latency_ms"]["p50"] / run["latency_ms"]["p50"], 3),
            "model": round(base["model_latency_ms"]["p50"] / run["model_latency_ms"]["p50"], 3),
        }
        for run in runs
    }
    return {
        "model": base["model"],
        "backends": list(backends),
        "device": base["device"],
        "precision": precision,
        "size": list(size),
        "runs": runs,
        "speedup": speedup,
        "machine": machine_info(torch.device(base["device"])),
    }
