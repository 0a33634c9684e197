"""Latency and memory of a model through the Segmenter (end to end and model only), on one or several backends."""
from __future__ import annotations

import os
import resource

import numpy as np
import torch

from ros_seg.bench.timing import time_once
from ros_seg.eval.latency_metrics import latency_stats
from ros_seg.eval.machine_info import machine_info
from ros_seg.inference.segmenter import Segmenter
from ros_seg.models.complexity import count_gmacs, count_parameters
from ros_seg.models.model_config import ModelConfig
from ros_seg.models.registry import build_model

STAGES = ("preprocess", "infer", "postprocess")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Timer:
    """Times `Segmenter.segment` on one image, keeping the end-to-end and per-stage latencies (ms)."""

    def __init__(self, seg: Segmenter, image: np.ndarray) -> None:
        self.seg = seg
        self.image = image
        self.end_to_end: list[float] = []
        self.stages: dict[str, list[float]] = {k: [] for k in STAGES}

    def run(self, record: bool) -> None:
        timings: dict[str, float] = {}

        def segment_once() -> None:
            timings.update(self.seg.segment(self.image, "rgb8").timings)

        elapsed = time_once(segment_once, self.seg.device)
        if record:
            self.end_to_end.append(elapsed)
            for k in STAGES:
                self.stages[k].append(timings[k])

    def summary(self, weights: str | None, repeats: int) -> dict:
        seg = self.seg
        stage_stats = {k: latency_stats(v) for k, v in self.stages.items()}
        end_to_end = latency_stats(self.end_to_end)
        result = {
            "model": seg.model_name,
            "backend": seg.backend.name,
            "device": str(seg.device),
            "precision": seg.precision,
            "channels_last": bool(getattr(seg.backend, "channels_last", False)),
            "compile_mode": getattr(seg.backend, "compile_mode", "none"),
            "size": list(self.image.shape[:2]),
            "weights": str(weights) if weights else None,
            "repeats": repeats,
            "latency_ms": end_to_end,
            "model_latency_ms": stage_stats["infer"],
            "stage_latency_ms": stage_stats,
            "fps": round(1000.0 / end_to_end["p50"], 2),
            "peak_rss_mb": round(peak_rss_mb(), 1),
        }
        if seg.device.type == "cuda":
            result["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(seg.device) / 2**20, 1)
        return result


def _random_image(size: tuple[int, int]) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(*size, 3), dtype=np.uint8)


def _load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (other work on the machine skews CPU timings)."""
    return [round(v, 2) for v in os.getloadavg()]


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
    compile_mode: str = "none",
    semantic_rule: str = "authors",
) -> dict:
    """Time `Segmenter.segment` on a random (H, W, 3) image and the backend's model call alone (with
    compile_mode, the warm-up runs include the compilation; `semantic_rule` as Segmenter's)."""
    seg = Segmenter(
        model=model, weights=weights, device=device, precision=precision, backend=backend,
        input_size=_export_size(backend, size), channels_last=channels_last, compile_mode=compile_mode,
        semantic_rule=semantic_rule,
    )
    if seg.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(seg.device)
    timer = _Timer(seg, _random_image(size))
    load_before = _load_average()
    for i in range(warmup + repeats):
        timer.run(record=i >= warmup)
    result = timer.summary(weights, repeats)
    result.update(model_complexity(seg.config, size))
    result["semantic_rule"] = seg.default_options.semantic_rule
    result["load_average"] = {"before": load_before, "after": _load_average()}
    result["machine"] = machine_info(seg.device)
    return result


def _export_size(backend: str, size: tuple[int, int]) -> tuple[int, int] | None:
    """Exported backends are timed on a model exported at the benchmark's size (fixed shapes, as
    deployed; the deformable-attention models export at a fixed size only)."""
    return None if backend == "torch" else size


def model_complexity(config: ModelConfig, size: tuple[int, int]) -> dict:
    """Parameters and the GMACs ros_seg's inference runs at `size` (counted on the meta device)."""
    model, _ = build_model(config)
    return {
        "params": count_parameters(model),
        "gmacs_inference": round(count_gmacs(model, size, all_predictions=False)["total"], 2),
    }


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
    semantic_rule: str = "authors",
) -> dict:
    """Time the model on several backends in this process, with speedups over the first backend.

    The backends take turns call by call, so load from other processes on a
    shared machine skews them alike. `speedup` maps each backend to (first
    backend's p50) / (its p50), end to end and model only.
    """
    image = _random_image(size)
    timers = [
        _Timer(
            Segmenter(model, weights, device, precision, name, _export_size(name, size), channels_last=channels_last,
                      semantic_rule=semantic_rule),
            image,
        )
        for name in backends
    ]
    load_before = _load_average()
    for i in range(warmup + repeats):
        for timer in timers:
            timer.run(record=i >= warmup)
    runs = [timer.summary(weights, repeats) for timer in timers]
    base = runs[0]
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
        "load_average": {"before": load_before, "after": _load_average()},
        "machine": machine_info(timers[0].seg.device),
    }
