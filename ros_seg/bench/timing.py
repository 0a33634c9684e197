"""Timing loops for benchmarks (their statistics: ros_seg.eval.latency_metrics)."""
from __future__ import annotations

import time
from collections.abc import Callable

import torch

from ros_seg.eval.latency_metrics import latency_stats


def time_once(fn: Callable[[], object], device: torch.device) -> float:
    """Wall time of one call in ms, waiting for the device before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) * 1e3


def time_calls(fn: Callable[[], object], warmup: int, repeats: int, device: torch.device) -> list[float]:
    """Run fn `warmup` times, then time `repeats` calls (ms each)."""
    for _ in range(warmup):
        fn()
    return [time_once(fn, device) for _ in range(repeats)]


def time_interleaved(
    runs: dict[str, Callable[[], object]], warmup: int, repeats: int, device: torch.device
) -> dict[str, dict[str, float]]:
    """Latency stats of each named call, the calls taking turns (so drifts of a shared machine hit
    them alike): `warmup` untimed rounds, then `repeats` timed ones."""
    for _ in range(warmup):
        for run in runs.values():
            run()
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            samples[name].append(time_once(run, device))
    return {name: latency_stats(values) for name, values in samples.items()}
