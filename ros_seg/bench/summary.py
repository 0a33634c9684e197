"""Render benchmark JSON files (written by `ros-seg bench --json`) as Markdown tables.

    python -m ros_seg.bench.summary benchmarks/cpu > benchmarks/cpu/RESULTS.md
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def _machine_line(machine: dict) -> str:
    gpu = f", GPU {machine['gpu']} (CUDA {machine.get('cuda')})" if "gpu" in machine else ""
    return (
        f"{machine['cpu']}, {machine['cpu_cores']} cores, {machine['torch_threads']} torch threads{gpu}; "
        f"torch {machine['torch']}, Python {machine['python']}, {machine['os']}"
    )


def render(directory: Path) -> str:
    results = [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]
    lines = [f"# Benchmark results: {directory.name}", ""]
    models = [r for r in results if "model" in r and "latency_ms" in r]
    if models:
        lines += [
            "## Models (end to end through the Segmenter: pre-process + model + post-process)",
            "",
            "| model | backend | device | precision | size | e2e p50 ms | e2e p95 ms | model p50 ms | FPS | peak memory MB |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in models:
            mem = r.get("peak_gpu_mb", r.get("peak_rss_mb"))
            kind = "GPU alloc" if "peak_gpu_mb" in r else "RSS"
            lines.append(
                f"| {r['model']} | {r['backend']} | {r['device']} | {r['precision']} | {r['size'][0]}x{r['size'][1]} "
                f"| {r['latency_ms']['p50']:.1f} | {r['latency_ms']['p95']:.1f} | {r['model_latency_ms']['p50']:.1f} "
                f"| {r['fps']:.2f} | {mem:.0f} ({kind}) |"
            )
        lines.append("")
    for r in results:
        if r.get("op") == "deform_conv2d":
            lines += [
                "## deform_conv2d vs conv2d (same shape, same run)",
                "",
                f"Input {tuple(r['shape'])}, {r['kernel']}x{r['kernel']}: deform_conv2d p50 "
                f"{r['deform_ms']['p50']:.1f} ms, conv2d p50 {r['conv_ms']['p50']:.1f} ms, ratio **{r['ratio']:.2f}**.",
                "",
            ]
        if r.get("op") == "cross_attention":
            lines += [
                f"## PEM cross-attention vs masked cross-attention ({r['queries']} queries, {r['channels']} ch)",
                "",
                "| tokens | PEM-CA p50 ms | masked CA p50 ms | speed-up |",
                "|---|---|---|---|",
            ]
            lines += [
                f"| {row['tokens']} | {row['pem_ms']['p50']:.2f} | {row['masked_ms']['p50']:.2f} | {row['speedup']:.2f}x |"
                for row in r["results"]
            ]
            lines.append("")
    lines += ["## Runs", ""]
    for r in results:
        lines.append(f"- `{r.get('command', '?')}` on {_machine_line(r['machine'])}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render(Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/cpu")))
