"""The padded input size of a model: the image size rounded up to its `size_divisibility` (32 here)."""
from __future__ import annotations

from collections.abc import Sequence


def padded_size(size: Sequence[int], divisor: int) -> tuple[int, int]:
    """(H, W) rounded up to multiples of `divisor`; also for the traced sizes of an ONNX export (whose
    integer division truncates, hence a remainder of a non-negative size rather than floor division)."""
    height, width = size
    return height + (divisor - height % divisor) % divisor, width + (divisor - width % divisor) % divisor
