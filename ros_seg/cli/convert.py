"""`ros-seg convert`: import the authors' published checkpoints (PEM, Mask2Former, PRO-SCALE); re-store
ros_seg checkpoints."""
from __future__ import annotations

import argparse
from pathlib import Path

from ros_seg.models.checkpoint import STORAGES, CheckpointError, load_weights, save_checkpoint
from ros_seg.models.detectron2_import import convert_detectron2_state_dict
from ros_seg.models.key_renaming import RenamedWeights
from ros_seg.models.load import load_model
from ros_seg.models.mask2former_import import convert_mask2former_state_dict
from ros_seg.models.model_config import ModelConfig
from ros_seg.models.official_checkpoint_file import DETECTRON2, MMCV, MODEL_ZOO_PICKLE, read_official_checkpoint
from ros_seg.models.registry import build_model, load_model_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="import an official checkpoint (PEM, Mask2Former, PRO-SCALE), or re-store a ros_seg checkpoint",
        description="Convert a published checkpoint into a ros_seg checkpoint carrying the model config and "
        "class metadata: --from-official reads a Mask2Former model-zoo .pkl (a pickle of numpy arrays, read "
        "without running any code from it), a detectron2 .pth (PRO-SCALE, or the PEM authors' training "
        "output: ResNet-50 or STDC, current or earlier key names) or an mmcv .pth, recognized from the "
        "content; --from-detectron2 reads detectron2 files only. Missing, mis-shaped or unknown tensors are "
        "listed; tensors only training uses are named as dropped. Or re-write a ros_seg checkpoint (e.g. a "
        "training checkpoint) as weights only, with --storage fp16 or int8 for a small deployable file.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--from-official", dest="official", metavar="FILE",
                     help="a published checkpoint: Mask2Former .pkl, PRO-SCALE or PEM detectron2 .pth")
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
        config = load_model_config(args.model)
        model, metadata = build_model(config)
        official = read_official_checkpoint(source)
        if args.detectron2 and official.container not in (DETECTRON2, MODEL_ZOO_PICKLE):
            raise CheckpointError(f"{source} is an {official.container}, not a detectron2 checkpoint: "
                                  "use --from-official")
        renamed = _rename(official.container, official.weights, config, model.state_dict(), str(source))
        load_weights(model, renamed.tensors, str(source))
        print(f"read {source}: {official.container}, {len(official.weights)} tensors")
        if renamed.dropped:
            shown = ", ".join(renamed.dropped[:10]) + (" ..." if len(renamed.dropped) > 10 else "")
            print(f"dropped {len(renamed.dropped)} tensors the model does not use (training-only or duplicates): "
                  f"{shown}")
    save_checkpoint(args.out, model, config, metadata, extra={"converted_from": str(source)}, storage=args.storage)
    size_mb = Path(args.out).stat().st_size / 2**20
    print(f"wrote {args.out}: {config.name}, {args.storage} weights, {size_mb:.1f} MiB, from {source}")
    return 0


def _rename(container: str, weights: dict, config: ModelConfig, expected: dict, source: str) -> RenamedWeights:
    """The official `weights` under the names of `config`'s model, by the rules of its kind of model."""
    if config.meta_architecture == "panoptic_segformer" or container == MMCV:
        raise CheckpointError(
            f"{source} ({container}) cannot be imported into {config.name}: ros_seg's Panoptic SegFormer head "
            "differs from the official one (issue 24), so official Panoptic SegFormer weights do not fit it yet"
        )
    if config.pixel_decoder.name == "pem":
        return convert_detectron2_state_dict(weights, expected, source)
    return convert_mask2former_state_dict(weights, expected, source)
