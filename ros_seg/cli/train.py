"""`ros-seg train`: train a model from a training config on Cityscapes-layout data."""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace

import torch

from ros_seg.train.distributed import shutdown_distributed
from ros_seg.train.train_config import TrainConfig
from ros_seg.train.trainer import train


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model (single process or under torchrun)",
        description="Train a model with the Mask2Former / PEM recipe (Hungarian matching, class + BCE + dice "
        "losses with deep supervision, AdamW, warmup + cosine/poly schedule, gradient clipping, mixed precision "
        "on GPUs and on CPUs with bf16 instructions) from a training config (config/train/*.yaml) on data in the "
        "Cityscapes layout (real Cityscapes with createPanopticImgs output, or `ros-seg synth`). OUT receives "
        "metrics.jsonl (one JSON line per logged iteration and per evaluation), model_NNNNNNN.pt checkpoints, "
        "model_final.pt and last_checkpoint, and model_best.pt when the config sets best_metric (miou, pq, pq_things "
        "or pq_stuff: the weights of the best evaluation so far). "
        "Checkpoints load in every ros-seg tool (`ros-seg eval --weights OUT/model_final.pt`). For several "
        "GPUs or CPU processes run `torchrun --nproc_per_node N -m ros_seg.cli train ...`; solver.batch_size "
        "is the total over all processes.",
    )
    p.add_argument("--config", required=True, metavar="FILE",
                   help="training config YAML (e.g. config/train/pem_r50_cityscapes.yaml)")
    p.add_argument("--data", metavar="DIR", default=None, help="Cityscapes-layout data root (overrides data.root)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder for logs and checkpoints")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in OUT from its newest checkpoint (exactly as if never interrupted)")
    p.add_argument("--init-weights", metavar="CKPT", default=None,
                   help="start from the weights of this ros_seg checkpoint of the same model and classes "
                   "(fine-tuning; overrides init_weights; optimizer, schedule and iteration start fresh)")
    p.add_argument("--max-iters", type=int, default=None, metavar="N",
                   help="train N iterations in all (overrides solver.max_iters, which also sets the schedule length)")
    p.add_argument("--seed", type=int, default=None, metavar="N",
                   help="seed of the weights' initialisation, the data order and the augmentation (overrides "
                   "seed; give the same with --resume)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="device to train on (default: cuda when available, else cpu)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = TrainConfig.from_yaml(args.config)
    if args.data is not None:
        config = replace(config, data=replace(config.data, root=args.data))
    if args.init_weights is not None:
        if args.resume:
            raise ValueError("--init-weights starts a new run; --resume continues one: give only one of them")
        config = replace(config, init_weights=args.init_weights)
    if args.max_iters is not None and args.max_iters < 1:
        raise ValueError(f"--max-iters must be at least 1, got {args.max_iters}")
    if args.seed is not None:
        if args.seed < 0:
            raise ValueError(f"--seed must be 0 or more, got {args.seed}")
        config = replace(config, seed=args.seed)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        result = train(config, args.out, device=device, resume=args.resume, max_iters=args.max_iters)
    finally:
        shutdown_distributed()
    if os.environ.get("RANK", "0") == "0":
        per_class = ("per_class_iou", "per_class_pq", "confused_with")  # in metrics.jsonl; the summary stays one line
        accuracy = {k: v for k, v in (result["eval"] or {}).items() if k not in per_class}
        best = {"best": result["best"]} if "best" in result else {}
        print(json.dumps({"checkpoint": result["checkpoint"], **accuracy, **best}))
    return 0
