"""Which precision training's autocast runs the model in (solver.amp), by device.

GPUs: bf16 where supported, else fp16 (with a GradScaler). CPUs: bf16 when the
CPU computes it natively, else full precision.
"""
from __future__ import annotations

import torch


def cpu_computes_bf16() -> bool:
    """True when this CPU has bf16 instructions (AVX512-BF16 or AMX), where bf16 autocast pays off.

    Without them PyTorch emulates bf16 and autocast would only cost time.
    """
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def autocast_precision(device: torch.device, amp: bool) -> tuple[bool, torch.dtype]:
    """(enabled, dtype) of the model's autocast when training with solver.amp = `amp` on `device`.

    GPUs: bf16 where supported, else fp16 (with a GradScaler). CPUs: bf16 when the
    CPU computes it natively (PEM-STDC1's training step 1.06 -> 0.73 s on one
    core of an AVX512-BF16 EPYC), else full precision.
    """
    if device.type == "cuda":
        return amp, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return amp and cpu_computes_bf16(), torch.bfloat16
