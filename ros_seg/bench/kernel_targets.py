"""Compile every Triton kernel variant ros_seg can launch for real GPU architectures, without a GPU.

The interpreter (``TRITON_INTERPRET=1``) checks the kernels' arithmetic but
never compiles them, so a kernel that Triton cannot compile passes there and
fails on the first GPU call. This module runs the real launch code of
:mod:`ros_seg.ops.deform_conv_triton` and :mod:`ros_seg.ops.ms_deform_attn_triton`
(forward and backward, through autograd) on CPU tensors, with Triton's
just-in-time machinery pointed at a chosen architecture: Triton specializes
each launch as it would on that GPU (argument types, integer and alignment
specializations, constexprs, every autotuner configuration), and each resulting
variant is compiled for real, down to a cubin by the ptxas that Triton bundles.
Only the launch is skipped (there is no GPU to run on). ``cuobjdump
--dump-resource-usage`` then reads registers, spills (local memory) and shared
memory per variant.

The calls cover what ros_seg launches: fp32, fp16 and bf16; with and without
the modulation mask; contiguous and channels-last deform-conv inputs (fp16, the
channels-last inference path); every gradient combination the backward kernels
have; Mask2Former's attention geometry (8 heads, 32 channels, 4 points, 3
levels) with float32 sampling locations. Shapes come in two sizes, so that
integer arguments are specialized both ways (multiples of 16 and not).

    python -m ros_seg.bench.kernel_targets --arch 90,89,87,86,80 --json - --markdown OUT.md

Needs Triton, which must not be in interpreter mode (``TRITON_INTERPRET`` unset).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

ARCHITECTURES = {
    90: "H100 / H200 (Hopper)",
    89: "L4, L40, RTX 40 (Ada)",
    87: "Jetson AGX Orin / Orin NX / Orin Nano",
    86: "A10, A40, RTX 30 (Ampere GA10x)",
    80: "A100 (Ampere GA100)",
}
"""Compute capabilities checked by default, with the GPUs that have them."""


@dataclass
class CompiledVariant:
    """One kernel variant compiled for one architecture, with its resource usage."""

    arch: int
    kernel: str
    variant: str
    registers: int
    spilled_bytes: int
    shared_bytes: int
    num_warps: int
    seconds: float


class _CompileOnlyDriver:
    """What Triton's JIT asks of the active driver before a launch, answered for an architecture with no
    device present. Triton's benchmarker is replaced too: autotuning then tries every configuration (each is
    compiled through the hook) and times none."""

    def __init__(self, capability: int) -> None:
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget("cuda", capability, 32)

    def get_current_target(self):  # noqa: ANN201 - Triton's GPUTarget
        return self.target

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device: int | None = None) -> int:
        return 0

    def get_active_torch_device(self) -> torch.device:
        return torch.device("cpu")

    def get_benchmarker(self) -> Callable:
        def untimed(kernel_call: Callable[[], None], quantiles: tuple = (0.5,)) -> list[float]:
            kernel_call()
            return [0.0 for _ in quantiles]

        return untimed


def _resource_usage(cubin: bytes) -> tuple[int, int, int]:
    """Registers, spilled (local-memory) bytes and static shared bytes of a cubin's one kernel."""
    from triton import knobs

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "kernel.cubin"
        path.write_bytes(cubin)
        cuobjdump = knobs.nvidia.cuobjdump.path
        report = subprocess.run([cuobjdump, "--dump-resource-usage", str(path)], capture_output=True, text=True,
                                check=True).stdout

    def field(name: str) -> int:
        match = re.search(rf"\b{name}:(\d+)", report)
        if match is None:
            raise RuntimeError(f"cuobjdump printed no {name} for the kernel:\n{report}")
        return int(match.group(1))

    return field("REG"), field("LOCAL"), field("SHARED")


class _Collector:
    """The JIT cache hook: compiles each launch Triton prepares, once per distinct variant, and tells the JIT
    not to launch it."""

    def __init__(self, capability: int) -> None:
        self.capability = capability
        self.target = _CompileOnlyDriver(capability).target
        self.results: list[CompiledVariant] = []
        self.call = ""  # which of the calls below is running, for the variant's name
        self._seen: set[str] = set()

    def __call__(self, *, key, repr, fn, compile, is_manual_warmup, already_compiled) -> bool:  # noqa: ANN001
        import triton
        from triton.compiler import ASTSource

        identity = f"{fn.name} {key}"  # the JIT's own cache key: specialization, constexprs and options
        if identity in self._seen:
            return True
        self._seen.add(identity)
        options = {name: compile[name] for name in ("num_warps", "num_ctas", "num_stages", "enable_fp_fusion")}
        source = ASTSource(fn.jit_function, compile["signature"], compile["constants"], compile["configs"][0])
        start = time.perf_counter()
        compiled = triton.compile(source, target=self.target, options=options)
        seconds = time.perf_counter() - start
        registers, spilled, shared = _resource_usage(compiled.asm["cubin"])
        self.results.append(CompiledVariant(self.capability, fn.name, f"{self.call}: {_variant_name(compile)}",
                                            registers, spilled, shared, compile["num_warps"], round(seconds, 2)))
        return True


def _variant_name(compile: dict) -> str:
    """Dtypes of the pointer arguments, the constexprs and the launch options, in one line."""
    pointers = sorted({kind.lstrip("*") for kind in compile["signature"].values() if kind.startswith("*")})
    jit_params = list(compile["signature"])
    constants = ", ".join(f"{jit_params[path[0]]}={value}" for path, value in sorted(compile["constants"].items())
                          if jit_params[path[0]].isupper() or jit_params[path[0]] == "heads")
    return f"{'/'.join(pointers)} {constants} warps={compile['num_warps']} stages={compile['num_stages']}"


@contextmanager
def _targeting(collector: _Collector) -> Iterator[None]:
    """Triton's JIT aimed at the collector's architecture, compiling through it; caches emptied before and
    after, so every architecture sees every variant."""
    from triton import knobs
    from triton.runtime.driver import driver

    kernels = _autotuned_kernels()
    previous_hook = knobs.runtime.jit_cache_hook
    previous_driver = driver._active  # None on a machine without a GPU: nothing to create then
    driver.set_active(_CompileOnlyDriver(collector.capability))
    knobs.runtime.jit_cache_hook = collector
    for kernel in kernels:
        kernel.cache.clear()
        kernel.fn.device_caches.clear()
    try:
        yield
    finally:
        knobs.runtime.jit_cache_hook = previous_hook
        for kernel in kernels:
            kernel.cache.clear()
            kernel.fn.device_caches.clear()
        driver.set_active(previous_driver)


def _autotuned_kernels() -> list:
    from triton.runtime.autotuner import Autotuner

    from ros_seg.ops import deform_conv_triton, ms_deform_attn_triton

    return [value for module in (deform_conv_triton, ms_deform_attn_triton) for value in vars(module).values()
            if isinstance(value, Autotuner)]


def _deform_calls(size: tuple[int, int]) -> Iterator[tuple[str, Callable[[], None]]]:
    """Forward and backward calls of the deform-conv kernels (PEM's 3x3, padding 1, one offset group)."""
    from ros_seg.ops.deform_conv_triton import deform_conv2d_triton

    height, width = size
    channels = 32

    def call(dtype: torch.dtype, with_mask: bool, channels_last: bool, grads: tuple[str, ...]) -> None:
        def tensor(*shape: int) -> torch.Tensor:
            t = torch.zeros(shape, dtype=dtype)
            return t.contiguous(memory_format=torch.channels_last) if channels_last and t.dim() == 4 else t

        tensors = {
            "input": tensor(1, channels, height, width), "offset": tensor(1, 18, height, width),
            "mask": tensor(1, 9, height, width) if with_mask else None, "weight": tensor(channels, channels, 3, 3),
        }
        for name in grads:
            tensors[name].requires_grad_()
        output = deform_conv2d_triton(tensors["input"], tensors["offset"], tensors["weight"], None, (1, 1), (1, 1),
                                      (1, 1), tensors["mask"])
        if grads:
            output.float().sum().backward()

    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for with_mask in (True, False):
            yield "deform forward+backward", lambda d=dtype, m=with_mask: call(d, m, False,
                                                                             ("input", "offset", "weight"))
    for with_mask in (True, False):
        yield "deform fp16 channels-last", lambda m=with_mask: call(torch.float16, m, True, ())
    for grads in (("offset",), ("input",)):
        yield "deform partial gradients", lambda g=grads: call(torch.float32, True, False, g)


def _attention_calls(queries: int) -> Iterator[tuple[str, Callable[[], None]]]:
    """Forward and backward calls of the deformable-attention kernels at Mask2Former's geometry."""
    from ros_seg.ops.ms_deform_attn_triton import ms_deform_attn_triton

    levels = [(8, 16), (4, 8), (2, 4)] if queries % 16 == 0 else [(9, 13), (5, 7), (3, 4)]
    shapes = torch.tensor(levels, dtype=torch.long)
    areas = shapes.prod(1)
    starts = torch.cat((areas.new_zeros(1), areas.cumsum(0)[:-1]))

    def call(dtype: torch.dtype, grads: tuple[str, ...]) -> None:
        tensors = {
            "value": torch.zeros(1, int(areas.sum()), 8, 32, dtype=dtype),
            "locations": torch.zeros(1, queries, 8, 3, 4, 2, dtype=torch.float32),
            "weights": torch.zeros(1, queries, 8, 3, 4, dtype=dtype),
        }
        for name in grads:
            tensors[name].requires_grad_()
        output = ms_deform_attn_triton(tensors["value"], shapes, starts, tensors["locations"], tensors["weights"])
        if grads:
            output.float().sum().backward()

    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        yield "attention forward+backward", lambda d=dtype: call(d, ("value", "locations", "weights"))
    for grads in (("value",), ("locations", "weights")):
        yield "attention partial gradients", lambda g=grads: call(torch.float32, g)


def compile_for(capability: int) -> list[CompiledVariant]:
    """Every variant ros_seg launches, compiled for sm_<capability>."""
    collector = _Collector(capability)
    with _targeting(collector):
        for size, queries, ints in (((16, 32), 64, "aligned ints"), ((9, 13), 23, "odd ints")):
            for name, call in (*_deform_calls(size), *_attention_calls(queries)):
                collector.call = f"{name}, {ints}"
                call()
    return collector.results


def markdown(results: list[CompiledVariant], command: str) -> str:
    """A results table per architecture, with totals."""
    import triton

    lines = [
        "# Triton kernels compiled for GPU architectures (no GPU needed)",
        "",
        f"`{command}` with Triton {triton.__version__} (its bundled ptxas), on {os.uname().machine}; "
        "registers, spills (local memory) and shared memory from `cuobjdump --dump-resource-usage`. "
        "Compiled, not run: no GPU took part.",
        "",
    ]
    for arch in sorted({r.arch for r in results}, reverse=True):
        rows = [r for r in results if r.arch == arch]
        spilled = sum(1 for r in rows if r.spilled_bytes)
        lines += [f"## sm_{arch}: {ARCHITECTURES.get(arch, '')}", "",
                  f"{len(rows)} variants, {spilled} with spills, max {max(r.registers for r in rows)} registers.", "",
                  "| kernel | variant | registers | spilled bytes | shared bytes | compile s |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r.kernel} | {r.variant} | {r.registers} | {r.spilled_bytes} | {r.shared_bytes} | {r.seconds} |"
                  for r in rows]
        lines.append("")
    return "\n".join(lines)


def architectures(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--arch takes compute capabilities like 90,87, got {text!r}") from None
    if not values or any(v < 70 or v > 120 for v in values):
        raise argparse.ArgumentTypeError(f"--arch takes compute capabilities from 70 to 120, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ros_seg.bench.kernel_targets", description=__doc__.split("\n")[0])
    parser.add_argument("--arch", type=architectures, default=list(ARCHITECTURES),
                        help="compute capabilities, comma-separated (default 90,89,87,86,80)")
    parser.add_argument("--json", help="write the results as JSON here ('-' = stdout)")
    parser.add_argument("--markdown", help="write a Markdown report here")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        parser.error("TRITON_INTERPRET=1 is set: the interpreter compiles nothing; unset it")
    results = [variant for arch in args.arch for variant in compile_for(arch)]
    for arch in args.arch:
        rows = [r for r in results if r.arch == arch]
        print(f"sm_{arch}: {len(rows)} variants compiled, max {max(r.registers for r in rows)} registers, "
              f"{sum(1 for r in rows if r.spilled_bytes)} with spills", file=sys.stderr)
    if args.json:
        text = json.dumps({"triton_compile": [asdict(r) for r in results]}, indent=1)
        sys.stdout.write(text + "\n") if args.json == "-" else Path(args.json).write_text(text + "\n")
    if args.markdown:
        command = "python -m ros_seg.bench.kernel_targets " + " ".join(argv if argv is not None else sys.argv[1:])
        Path(args.markdown).write_text(markdown(results, command) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
