"""A stand-in CUDA kernel that records its calls, for the dispatch tests of the custom ops."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor


@contextmanager
def recorded_kernel_calls(register: Callable[[Callable | None], Callable | None]) -> Iterator[list[tuple]]:
    """Register, with the op's `register` function, a kernel that records its arguments and returns
    tensor([7.]); yield its calls; restore the previous kernel afterwards."""
    calls: list[tuple] = []

    def kernel(*arguments: Tensor) -> Tensor:
        calls.append(arguments)
        return torch.full((1,), 7.0)

    previous = register(kernel)
    try:
        yield calls
    finally:
        register(previous)
