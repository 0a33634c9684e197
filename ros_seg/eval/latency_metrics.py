"""Latency statistics of timed calls or frames (milliseconds), as benchmarks and replay reports give them."""
from __future__ import annotations

import numpy as np


def latency_stats(samples_ms: list[float]) -> dict[str, float]:
    """p50, p95, p99, mean, min, max of latencies in milliseconds."""
    a = np.asarray(samples_ms, dtype=np.float64)
    return {
        "p50": round(float(np.percentile(a, 50)), 3),
        "p95": round(float(np.percentile(a, 95)), 3),
        "p99": round(float(np.percentile(a, 99)), 3),
        "mean": round(float(a.mean()), 3),
        "min": round(float(a.min()), 3),
        "max": round(float(a.max()), 3),
    }
