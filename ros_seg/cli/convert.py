"""`ros-seg convert`: import the authors' published checkpoints (PEM, Mask2Former, PRO-SCALE, Panoptic
SegFormer); re-store ros_seg checkpoints."""
from __future__ import annotations

import argparse
from pathlib import Path

from ros_seg.models.checkpoint import STORAGES, save_checkpoint
from ros_seg.models.load import load_model
from ros_seg.models.official_conversion import import_official_checkpoint


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="import an official checkpoint (PEM, Mask2Former, PRO-SCALE, Panoptic SegFormer), or re-store a "
        "ros_seg checkpoint",
        description="Convert a published checkpoint into a ros_seg checkpoint carrying the model config and "
        "class metadata: --from-official reads a Mask2Former model-zoo .pkl (a pickle of numpy arrays, read "
        "without running any code from it), a detectron2 .pth (PRO-SCALE, or the PEM authors' training "
        "output: ResNet-50 or STDC, current or earlier key names) or a Panoptic SegFormer mmcv .pth, recognized "
        "from the content; --from-detectron2 reads detectron2 files only. Missing, mis-shaped or unknown tensors are "
        "listed; tensors only training uses are named as dropped. Or re-write a ros_seg checkpoint (e.g. a "
        "training checkpoint) as weights only, with --storage fp16 or int8 for a small deployable file.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--from-official", dest="official", metavar="FILE",
                     help="a published checkpoint: Mask2Former .pkl, PRO-SCALE or PEM detectron2 .pth, "
                     "Panoptic SegFormer mmcv .pth")
    src.add_argument("--from-detectron2", dest="detectron2", metavar="IN.pth", help="detectron2 checkpoint")
    src.add_argument("--from-checkpoint", dest="checkpoint", metavar="IN.pt", help="ros_seg checkpoint")
    p.add_argument("--model", help="ros_seg model the checkpoint holds (e.g. m2f_r50, proscale_r50_333_coco, pem_r50)")
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
        source = args.official or args.detectron2
        flag = "--from-official" if args.official else "--from-detectron2"
        if not args.model:
            raise ValueError(f"{flag} needs --model: the ros_seg model the checkpoint holds (e.g. m2f_r50)")
        imported = import_official_checkpoint(source, args.model, detectron2_only=bool(args.detectron2))
        model, config, metadata = imported.model, imported.config, imported.metadata
        print(f"read {source}: {imported.container}, {imported.tensors} tensors")
        if imported.dropped:
            shown = ", ".join(imported.dropped[:10]) + (" ..." if len(imported.dropped) > 10 else "")
            print(f"dropped {len(imported.dropped)} tensors the model does not use (training-only or duplicates): "
                  f"{shown}")
    save_checkpoint(args.out, model, config, metadata, extra={"converted_from": str(source)}, storage=args.storage)
    size_mb = Path(args.out).stat().st_size / 2**20
    print(f"wrote {args.out}: {config.name}, {args.storage} weights, {size_mb:.1f} MiB, from {source}")
    return 0

