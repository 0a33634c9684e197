"""`ros-seg convert`: import a checkpoint of the PEM authors' detectron2 training."""
from __future__ import annotations

import argparse

from ros_seg.models.checkpoint import load_weights, save_checkpoint
from ros_seg.models.detectron2_import import convert_detectron2_state_dict, read_detectron2_checkpoint
from ros_seg.models.registry import build_model, load_model_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="import a PEM checkpoint trained with the authors' detectron2 code",
        description="Convert a detectron2 model_final.pth produced by the PEM authors' training code "
        "(ResNet-50 or STDC backbone, current or earlier key names) into a ros_seg checkpoint "
        "carrying the model config and class metadata. Missing or mis-shaped tensors are listed.",
    )
    p.add_argument("--from-detectron2", dest="source", required=True, metavar="IN.pth", help="detectron2 checkpoint")
    p.add_argument("--model", required=True, help="ros_seg model the checkpoint was trained as (e.g. pem_r50)")
    p.add_argument("--out", required=True, metavar="OUT.pt", help="ros_seg checkpoint to write")
    p.add_argument("--half", action="store_true", help="store floating-point weights as fp16")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load_model_config(args.model)
    model, metadata = build_model(config)
    weights = read_detectron2_checkpoint(args.source)
    state = convert_detectron2_state_dict(weights, model.state_dict())
    load_weights(model, state, args.source)
    save_checkpoint(args.out, model, config, metadata, extra={"converted_from": str(args.source)}, half=args.half)
    print(f"wrote {args.out}: {config.name} with {len(state)} tensors from {args.source}")
    return 0
