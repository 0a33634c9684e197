"""Every Triton kernel variant ros_seg launches compiles for real GPU architectures (no GPU needed).

The interpreted kernel tests (test_gpu_kernels.py) never compile, so a kernel
Triton cannot compile passes them and crashes on the first GPU call (it
happened: the deform-conv forward kernel). Here ros_seg.bench.kernel_targets
drives the real launch code with Triton aimed at sm_90 (H100), sm_89 (L4 /
RTX 40), sm_87 (Jetson Orin), sm_86 (RTX 30 / A10) and sm_80 (A100), and
compiles each variant to a cubin with the ptxas Triton bundles, in a fresh
Triton cache. Two architectures compile at a time (one process each).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("triton", reason="Triton is not installed (requirements/core.txt pins it)")

ARCHITECTURES = (90, 89, 87, 86, 80)
KERNELS = {"_columns_kernel", "_columns_backward_kernel", "_forward_kernel", "_backward_kernel"}


def _compile(arch: int) -> list[dict]:
    env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    with tempfile.TemporaryDirectory() as cache:
        env["TRITON_CACHE_DIR"] = cache  # compiled here and now, not taken from an earlier run's cache
        done = subprocess.run([sys.executable, "-m", "ros_seg.bench.kernel_targets", "--arch", str(arch), "--json",
                               "-"], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, f"sm_{arch}: compiling failed:\n{done.stderr[-4000:]}"
    return json.loads(done.stdout)["triton_compile"]


@pytest.fixture(scope="module")
def compiled() -> dict[int, list[dict]]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(ARCHITECTURES, pool.map(_compile, ARCHITECTURES), strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHITECTURES, ids=lambda arch: f"sm_{arch}")
def test_every_kernel_variant_compiles_without_spills(compiled: dict[int, list[dict]], arch: int) -> None:
    variants = compiled[arch]
    print(f"\nsm_{arch}: {len(variants)} variants")
    for v in variants:
        print(f"  {v['kernel']:<26} {v['registers']:>3} regs {v['spilled_bytes']:>5} B spilled  {v['variant']}")
    assert {v["kernel"] for v in variants} == KERNELS
    names = " ".join(v["variant"] for v in variants)
    for dtype in ("fp32", "fp16", "bf16"):
        assert dtype in names
    for flag in ("HAS_MASK=False", "HAS_MASK=True", "INPUT_GRAD=False", "OFFSET_GRAD=False", "VALUE_GRAD=False",
                 "SAMPLING_GRAD=False", "BLOCK_P=128", "BLOCK_C=32", "BLOCK_Q=64", "heads=8"):
        assert flag in names, f"no variant with {flag}"
    assert len(variants) == len(compiled[ARCHITECTURES[0]]), "every architecture gets the same variants"
    spilling = [f"{v['kernel']} {v['variant']}: {v['spilled_bytes']} B" for v in variants if v["spilled_bytes"]]
    assert not spilling, "register spills:\n" + "\n".join(spilling)
    assert all(0 < v["registers"] <= 255 for v in variants)
