"""Running a GIL-free compiled kernel over bands of rows on a shared thread pool.

Compiled CPU kernels (Numba, `nogil=True`) are single-threaded and thread-safe;
splitting their rows into one band per torch thread runs them in parallel while
any number of callers (several Segmenters in one process) share the pool.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import torch

T = TypeVar("T")

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def bands(rows: int, parts: int | None = None) -> list[tuple[int, int]]:
    """range(rows) as up to `parts` (default: torch's thread count) contiguous (first, end) bands."""
    parts = max(1, min(parts or torch.get_num_threads(), rows))
    edges = np.linspace(0, rows, parts + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def run_in_bands(work: Callable[[int, int], T], rows: int) -> list[T]:
    """work(first_row, end_row) over the bands of range(rows), in parallel; results in band order."""
    global _pool
    parts = bands(rows)
    if len(parts) == 1:
        return [work(*parts[0])]
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="ros_seg_bands")
    return [f.result() for f in [_pool.submit(work, a, b) for a, b in parts]]
