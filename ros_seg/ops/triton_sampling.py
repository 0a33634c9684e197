"""Bilinear-sampling pieces shared by our Triton kernels (importable without Triton: then empty)."""
from __future__ import annotations

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU machines
    triton = None

if triton is not None:

    @triton.jit
    def floor_split(position):
        """Pixel coordinates -> (their floor as int32, the fractional part in [0, 1)): the first of the two
        neighbours along an axis and the weight of the second."""
        floor = tl.floor(position)
        return floor.to(tl.int32), position - floor
