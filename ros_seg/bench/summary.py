"""benchmarks/README.md from the JSON results that `ros-seg bench --json` wrote.

One section per device folder (benchmarks/cpu/, benchmarks/gpu-*/): a table of
every model x backend x precision run, then the operator micro-benchmarks, then
the exact commands and machines.

    python -m ros_seg.bench.summary benchmarks > benchmarks/README.md
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

HEADER = """# Benchmarks

Measured with `ros-seg bench` (JSON per run in the device folders) and the node
scripts in this folder (results in `results/`). Regenerate the CPU section with
`benchmarks/run_cpu.sh` on a quiet machine, then this file with
`python -m ros_seg.bench.summary benchmarks > benchmarks/README.md`.
Latency is end to end through the Segmenter (pre-process + model +
post-process, output at the input size) unless marked "model"; models run with
random weights, which cost the same as trained ones except in post-processing
(random masks have more boundaries). GMACs are what the inference runs.

"""


def _machine_line(machine: dict) -> str:
    gpu = f", GPU {machine['gpu']} (CUDA {machine.get('cuda')})" if "gpu" in machine else ""
    return (
        f"{machine['cpu']}, {machine['cpu_cores']} cores, {machine['torch_threads']} torch threads{gpu}; "
        f"torch {machine['torch']}, Python {machine['python']}"
    )


def _model_rows(runs: list[dict]) -> list[str]:
    lines = [
        "| model | backend | precision | size | params (M) | GMACs | p50 ms | p95 ms | model p50 ms | FPS "
        "| peak memory MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(runs, key=lambda r: (r["model"], r["backend"], r["precision"], r["size"])):
        mem = r.get("peak_gpu_mb", r.get("peak_rss_mb"))
        kind = "GPU alloc" if "peak_gpu_mb" in r else "RSS"
        params = f"{r['params'] / 1e6:.2f}" if "params" in r else "–"
        gmacs = f"{r['gmacs_inference']:.1f}" if "gmacs_inference" in r else "–"
        lines.append(
            f"| {r['model']} | {r['backend']} | {r['precision']} | {r['size'][0]}x{r['size'][1]} | {params} | {gmacs} "
            f"| {r['latency_ms']['p50']:.1f} | {r['latency_ms']['p95']:.1f} | {r['model_latency_ms']['p50']:.1f} "
            f"| {r['fps']:.2f} | {mem:.0f} ({kind}) |"
        )
    return lines


def _op_lines(r: dict) -> list[str]:
    if r.get("op") == "deform_conv2d":
        others = "".join(
            f"; {name} {r[f'{name}_ms']['p50']:.2f} ms ({r[f'speedup_vs_{name}']:.2f}x slower than ours)"
            for name in ("reference", "torchvision") if f"{name}_ms" in r
        )
        return [
            f"deform_conv2d ({r.get('implementation', 'reference')}) vs conv2d (same shape, same run): input "
            f"{tuple(r['shape'])}, {r['kernel']}x{r['kernel']}: {r['deform_ms']['p50']:.1f} ms vs "
            f"{r['conv_ms']['p50']:.1f} ms, ratio **{r['ratio']:.2f}**{others}.",
            "",
        ]
    if r.get("op") == "ms_deform_attn":
        names = [n for n in ("dispatch", "reference", "grid_sample") if f"{n}_ms" in r]
        lines = [
            f"ms_deform_attn at Mask2Former's encoder shapes for {r['size'][0]}x{r['size'][1]} ({r['tokens']} "
            f"queries and tokens; ours: {r['implementation']}), p50 ms:",
            "",
            "| implementation | forward | forward + backward |",
            "|---|---|---|",
        ]
        lines += [f"| {n} | {r[f'{n}_ms']['p50']:.1f} | {r[f'{n}_backward_ms']['p50']:.1f} |" for n in names]
        return lines + ["", f"Forward speed-up of ours over grid_sample: **{r['speedup_vs_grid_sample']:.2f}x**.", ""]
    if r.get("op") == "cross_attention":
        lines = [
            f"PEM cross-attention vs masked cross-attention ({r['queries']} queries, {r['channels']} channels, "
            "about half the tokens masked):",
            "",
            "| tokens | PEM-CA p50 ms | masked CA p50 ms | speed-up |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {row['tokens']} | {row['pem_ms']['p50']:.2f} | {row['masked_ms']['p50']:.2f} | {row['speedup']:.2f}x |"
            for row in r["results"]
        ]
        return lines + [""]
    if r.get("op") == "encoders":
        lines = [
            f"Encoders (pixel decoders) on the same backbone features, input {r['size'][0]}x{r['size'][1]}:",
            "",
            f"| model | encoder p50 ms | ratio to {r['baseline']} |",
            "|---|---|---|",
        ]
        lines += [
            f"| {name} | {m['encoder_ms']['p50']:.1f} | {m['ratio']:.2f} |" for name, m in r["models"].items()
        ]
        return lines + [""]
    if r.get("op") == "train":
        return [
            f"Training {r['model']} (`ros-seg bench --op train`): crops {r['crop_size'][0]}x{r['crop_size'][1]}, "
            f"batch {r['batch_size']}, {r['num_workers']} loader workers, autocast {r.get('autocast', 'off (fp32)')}: "
            f"{r['step_s']:.2f} s per iteration "
            f"({r['iterations_per_s']:.3f} it/s); waiting for data {100 * r['loader_share']:.1f}% of each step.",
            "",
        ]
    if "speedup" in r and "backends" in r:
        ratios = ", ".join(
            f"{name} {v['end_to_end']:.2f}x end to end / {v['model']:.2f}x model" for name, v in r["speedup"].items()
        )
        return [f"Backends compared in one run ({r['model']}, {r['size'][0]}x{r['size'][1]}): {ratios}.", ""]
    return []


def render_device(directory: Path) -> str:
    runs = [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]
    if not runs:
        return ""
    machine = runs[0]["machine"]
    lines = [f"## {directory.name}: {machine.get('gpu', machine['cpu'])}", ""]
    models = [r for r in runs if "model" in r and "latency_ms" in r]
    if models:
        lines += _model_rows(models) + [""]
    for r in runs:
        lines += _op_lines(r)
    lines += ["Commands and machines:", ""]
    lines += [f"- `{r.get('command', '?')}` — {_machine_line(r['machine'])}" for r in runs]
    return "\n".join(lines) + "\n\n"


def render(root: Path) -> str:
    sections = [render_device(d) for d in sorted(p for p in root.iterdir() if p.is_dir() and p.name != "results")]
    node = sorted((root / "results").glob("*.md")) if (root / "results").is_dir() else []
    tail = ["## Node and other results", ""] + [f"- [{p.stem}](results/{p.name})" for p in node]
    return HEADER + "".join(sections) + "\n".join(tail) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render(Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks")))
