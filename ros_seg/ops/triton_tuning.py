"""How our Triton kernels choose block sizes: ``triton.autotune`` over a few configurations per kernel.

On a GPU the autotuner times every configuration once per new key (the shapes
named by the kernel, plus the dtypes) and keeps the fastest. Kernels that
accumulate with atomic adds name those outputs in ``reset_to_zero``, so timing
runs do not add up in them. In Triton's interpreter (``TRITON_INTERPRET=1``,
CPU tensors) there is nothing to time, Triton's own benchmarker needs a GPU
driver, and every run costs seconds: there the first configuration is taken
without timing (the interpreted tests run each configuration by narrowing a
kernel's ``configs`` to it).

Importable without Triton (then empty).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

try:
    import triton
    from triton import knobs
except ImportError:  # CPU machines
    triton = None


def _interpreted() -> bool:
    return bool(knobs.runtime.interpret)


def _first_only(configs: list, named_args: dict, **kwargs: object) -> list:
    return configs[:1]


def _no_timing(kernel_call: Callable[[], None], quantiles: Sequence[float]) -> list[float]:
    return [0.0 for _ in quantiles]


def autotuned(configs: list, key: list[str], reset_to_zero: list[str] | None = None) -> Callable:
    """``triton.autotune`` with these configurations, keyed on ``key``; the first one, untimed, when interpreted."""
    if _interpreted():
        return triton.autotune(configs=configs, key=key, reset_to_zero=reset_to_zero,
                               prune_configs_by={"early_config_prune": _first_only}, do_bench=_no_timing)
    return triton.autotune(configs=configs, key=key, reset_to_zero=reset_to_zero)
