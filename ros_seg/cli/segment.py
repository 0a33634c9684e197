"""`ros-seg segment`: segment one image file (or a generated street scene) and write colored results."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from ros_seg.cli.arguments import image_size, weights_file
from ros_seg.inference.segmenter import Segmenter
from ros_seg.inference.visualize import blend, colorize_panoptic, colorize_semantic


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "segment",
        help="segment an image file or a generated street scene",
        description="Run a model on one image and write input.png, semantic.png (class colors), "
        "panoptic.png (instances shaded), overlay.png, grid.png (the four, 2x2), semantic_ids.png (train ids), "
        "panoptic_ids.png (16-bit segment ids) and segments.json to --out.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", help="image file (PNG/JPEG; read as RGB)")
    src.add_argument("--synthetic", action="store_true", help="generate a Cityscapes-like street scene")
    p.add_argument("--model", default=None, help="model name or config (default: the checkpoint's, else pem_stdc1)")
    p.add_argument("--weights", type=weights_file,
                   help="ros_seg checkpoint, or zoo:NAME (pulled with `ros-seg zoo pull`); without one the model "
                        "has random weights")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"))
    p.add_argument("--size", type=image_size, default=(512, 1024), help="size of the generated scene (HxW)")
    p.add_argument("--input-size", type=image_size, help="resize to this HxW before the network")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated scene")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity in [0, 1]")
    p.set_defaults(func=run)


def _load_image(args: argparse.Namespace) -> np.ndarray:
    if args.synthetic:
        from ros_seg.data.synthetic_scenes import frame_rng, synthesize_drive

        return synthesize_drive(frame_rng(args.seed, "val", 0), args.size, 1).render(0).image
    path = Path(args.image)
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read image {path}: not a file OpenCV can decode")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def run(args: argparse.Namespace) -> int:
    model = args.model if args.model or args.weights else "pem_stdc1"
    seg = Segmenter(model, args.weights, device=args.device, precision=args.precision, input_size=args.input_size)
    image = _load_image(args)
    result = seg.segment(image, "rgb8")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    classes = {s.id: s.class_id for s in result.segments}
    semantic_rgb = colorize_semantic(result.semantic, seg.metadata)
    panoptic_rgb = colorize_panoptic(result.panoptic, classes, seg.metadata)
    views = {
        "input": image,
        "semantic": semantic_rgb,
        "panoptic": panoptic_rgb,
        "overlay": blend(image, panoptic_rgb, args.alpha),
    }
    views["grid"] = np.vstack(
        [np.hstack([views["input"], views["semantic"]]), np.hstack([views["panoptic"], views["overlay"]])]
    )
    for name, rgb in views.items():
        cv2.imwrite(str(out / f"{name}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(out / "semantic_ids.png"), result.semantic)
    cv2.imwrite(str(out / "panoptic_ids.png"), result.panoptic.clip(0, 65535).astype(np.uint16))
    summary = {
        "model": seg.model_name,
        "weights": str(seg.weights) if seg.weights else None,
        "device": str(seg.device),
        "size": list(image.shape[:2]),
        "timings_ms": {k: round(v, 2) for k, v in result.timings.items()},
        "segments": [
            {
                "id": s.id,
                "class": s.class_name,
                "is_thing": s.is_thing,
                "score": round(s.score, 4),
                "area": s.area,
                "bbox": list(s.bbox),
                "centroid": [round(c, 2) for c in s.centroid],
            }
            for s in result.segments
        ],
    }
    (out / "segments.json").write_text(json.dumps(summary, indent=2) + "\n")
    t = result.timings
    print(
        f"{seg.model_name} on {seg.device}: {image.shape[1]}x{image.shape[0]} image, {len(result.segments)} segments, "
        f"{t['preprocess'] + t['infer'] + t['postprocess']:.0f} ms (model {t['infer']:.0f} ms)"
    )
    print(f"wrote {out}/: input, semantic, panoptic, overlay, grid, semantic_ids, panoptic_ids (.png), segments.json")
    return 0
