"""`ros-seg convert`: import the PEM authors' detectron2 checkpoints; re-store ros_seg checkpoints."""
from __future__ import annotations

import argparse
from pathlib import Path

from ros_seg.models.checkpoint import STORAGES, load_weights, save_checkpoint
from ros_seg.models.detectron2_import import convert_detectron2_state_dict, read_detectron2_checkpoint
from ros_seg.models.load import load_model
from ros_seg.models.registry import build_model, load_model_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="import a PEM detectron2 checkpoint, or re-store a ros_seg checkpoint",
        description="Convert a detectron2 model_final.pth produced by the PEM authors' training code "
        "(ResNet-50 or STDC backbone, current or earlier key names) into a ros_seg checkpoint "
        "carrying the model config and class metadata; missing, mis-shaped or unknown tensors are "
        "listed. Or re-write a ros_seg checkpoint (e.g. a training checkpoint) as weights only, with "
        "--storage fp16 or int8 for a small deployable file.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--from-detectron2", dest="detectron2", metavar="IN.pth", help="detectron2 checkpoint")
    src.add_argument("--from-checkpoint", dest="checkpoint", metavar="IN.pt", help="ros_seg checkpoint")
    p.add_argument("--model", help="ros_seg model a detectron2 checkpoint was trained as (e.g. pem_r50)")
    p.add_argument("--out", required=True, metavar="OUT.pt", help="ros_seg checkpoint to write")
    p.add_argument(
        "--storage",
        choices=STORAGES,
        default="fp32",
        help="how weights are stored: fp32, fp16, or int8 (per-channel weight matrices, rest fp16)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.checkpoint:
        loaded = load_model(weights=args.checkpoint)
        model, config, metadata, source = loaded.model, loaded.config, loaded.metadata, args.checkpoint
    else:
        if not args.model:
            raise ValueError("--from-detectron2 needs --model: the ros_seg model it was trained as (e.g. pem_r50)")
        config = load_model_config(args.model)
        model, metadata = build_model(config)
        weights = read_detectron2_checkpoint(args.detectron2)
        load_weights(model, convert_detectron2_state_dict(weights, model.state_dict()), args.detectron2)
        source = args.detectron2
    save_checkpoint(args.out, model, config, metadata, extra={"converted_from": str(source)}, storage=args.storage)
    size_mb = Path(args.out).stat().st_size / 2**20
    print(f"wrote {args.out}: {config.name}, {args.storage} weights, {size_mb:.1f} MiB, from {source}")
    return 0
