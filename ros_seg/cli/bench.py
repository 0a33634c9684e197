"""`ros-seg bench`: latency and memory of a model, or of one of our operators."""
from __future__ import annotations

import argparse
import json

import torch

from ros_seg.cli.arguments import add_json_argument, image_size, positive_int, weights_file, write_json
from ros_seg.inference.backends.torch_backend import COMPILE_MODES
from ros_seg.inference.segmenter import BACKENDS
from ros_seg.models.postprocess.label_maps import SEMANTIC_RULES

OPS = ("deform_conv2d", "ms_deform_attn", "cross_attention", "encoders", "train")


def backend_list(text: str) -> list[str]:
    """'torch,onnxruntime' -> ['torch', 'onnxruntime'], each a known backend, at least two."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BACKENDS]
    if unknown or len(names) < 2 or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(
            f"--compare-backends takes two or more distinct backends of {', '.join(BACKENDS)} "
            f"separated by commas, got {text!r}"
        )
    return names


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="latency/memory of a model (or an operator)",
        description="Measure a model through the Segmenter on a random image: end-to-end latency "
        "(pre-process + model + post-process) and model-only latency p50/p95, FPS, peak memory "
        "(process peak RSS on CPU, peak allocated on GPU). With --op, micro-benchmark an operator "
        "instead: deform_conv2d vs a plain conv of the same shape ((1,128,128,256) on CPU, (1,128,256,512) on "
        "GPU, where the pure-PyTorch reference and torchvision are timed too), or ms_deform_attn at "
        "Mask2Former's encoder shapes for --size vs one grid_sample per level (forward, and forward + "
        "backward), or PEM cross-attention vs "
        "masked cross-attention at the token counts of 1024x2048 feature maps, or the encoders (pixel "
        "decoders) of m2f_r50 and proscale_r50_111/222/333 on the same backbone features at --size, or "
        "training (--op train: iterations/s of pem_stdc1 at --size crops, batch 2, on generated scenes, and "
        "the share of each step spent waiting for data). "
        "Results include the machine; "
        "write them under benchmarks/ with --json. With --compare-backends the model runs on each "
        "backend in turn in this one process, and the result holds each run and the speedups over the first. "
        "The onnxruntime and tensorrt backends time a model exported at --size (fixed shapes).",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", help="model name or config file")
    what.add_argument("--op", choices=OPS, help="operator micro-benchmark")
    p.add_argument("--weights", type=weights_file,
                   help="ros_seg checkpoint or zoo:NAME (default: random weights; speed is the same)")
    p.add_argument("--size", type=image_size, default=(1024, 2048), help="image HxW (default 1024x2048)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--backend", default="torch", choices=BACKENDS, help="inference backend (default torch)")
    p.add_argument(
        "--compare-backends",
        type=backend_list,
        metavar="B1,B2[,...]",
        help="time the model on each of these backends in one run (e.g. torch,onnxruntime)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="profile the model's eager PyTorch forward instead (torch.profiler): time per operator and the "
        "share spent outside convolution and matrix-multiply kernels",
    )
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"),
                   help="inference precision (--op train follows the trainer's mixed precision instead)")
    p.add_argument("--channels-last", action="store_true", help="NHWC convolutions")
    p.add_argument("--semantic-rule", default="authors", choices=SEMANTIC_RULES,
                   help="semantic post-processing, as the node's semantic_rule parameter: authors (mask logits "
                   "resized, then sigmoid; the default everywhere) or fast (class scores at mask resolution, "
                   "then resized)")
    p.add_argument(
        "--compile",
        default="none",
        choices=COMPILE_MODES,
        help="torch backend: torch.compile mode (reduce-overhead adds CUDA graphs on GPUs); the warm-up runs "
        "compile, so give --warmup 3 or more (default none: eager)",
    )
    p.add_argument("--threads", type=positive_int,
                   help="CPU threads of torch and onnxruntime (default: torch's choice)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs first (default 2)")
    p.add_argument("--repeats", type=int, default=10, help="timed runs (default 10)")
    add_json_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.repeats < 1 or args.warmup < 0:
        raise ValueError("--repeats must be >= 1 and --warmup >= 0")
    if args.op == "deform_conv2d":
        from ros_seg.bench.deform_conv_speed import bench_deform_conv2d

        shape = (1, 128, 256, 512) if args.device.startswith("cuda") else (1, 128, 128, 256)
        result = bench_deform_conv2d(shape=shape, device=args.device, warmup=args.warmup, repeats=args.repeats)
    elif args.op == "ms_deform_attn":
        from ros_seg.bench.ms_deform_attn_speed import bench_ms_deform_attn

        result = bench_ms_deform_attn(size=args.size, device=args.device, warmup=args.warmup, repeats=args.repeats)
    elif args.op == "cross_attention":
        from ros_seg.bench.cross_attention_speed import bench_cross_attention

        result = bench_cross_attention(device=args.device, warmup=args.warmup, repeats=args.repeats)
    elif args.op == "train":
        from ros_seg.bench.train_speed import bench_training

        result = bench_training(
            "pem_stdc1", args.size, device=args.device, warmup=args.warmup, repeats=args.repeats
        )
    elif args.op == "encoders":
        from ros_seg.bench.encoder_speed import bench_encoders

        result = bench_encoders(size=args.size, device=args.device, warmup=args.warmup, repeats=args.repeats)
    elif args.profile:
        from ros_seg.bench.op_profile import profile_model

        result = profile_model(args.model, args.size, device=args.device, repeats=args.repeats)
    elif args.compare_backends:
        from ros_seg.bench.model_latency import compare_backends

        result = compare_backends(
            args.model,
            args.size,
            args.compare_backends,
            device=args.device,
            precision=args.precision,
            weights=args.weights,
            warmup=args.warmup,
            repeats=args.repeats,
            channels_last=args.channels_last,
            semantic_rule=args.semantic_rule,
        )
    else:
        from ros_seg.bench.model_latency import bench_model

        result = bench_model(
            args.model,
            args.size,
            device=args.device,
            backend=args.backend,
            precision=args.precision,
            weights=args.weights,
            warmup=args.warmup,
            repeats=args.repeats,
            channels_last=args.channels_last,
            compile_mode=args.compile,
            semantic_rule=args.semantic_rule,
        )
    result["command"] = "ros-seg bench " + " ".join(_argv_of(args))
    if args.json is not None:
        write_json(result, args.json)
    if args.json != "-":
        print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    return 0


def _argv_of(args: argparse.Namespace) -> list[str]:
    """The options that shaped this run, for the record."""
    out = []
    for key in ("model", "op", "weights", "size", "device", "backend", "precision", "threads", "warmup", "repeats"):
        value = getattr(args, key)
        if value is None or (key == "backend" and args.compare_backends):
            continue
        if key in ("backend", "precision") and args.op == "train":
            continue  # training runs PyTorch with the autocast of solver.amp (recorded as "autocast")
        if key == "size":
            value = f"{value[0]}x{value[1]}"
        out += [f"--{key}", str(value)]
    if args.compare_backends:
        out += ["--compare-backends", ",".join(args.compare_backends)]
    if args.profile:
        out.append("--profile")
    if args.channels_last:
        out.append("--channels-last")
    if args.compile != "none":
        out += ["--compile", args.compile]
    if args.semantic_rule != "authors":
        out += ["--semantic-rule", args.semantic_rule]
    return out
