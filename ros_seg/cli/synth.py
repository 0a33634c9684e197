"""`ros-seg synth`: synthetic street scenes written in the Cityscapes layout."""
from __future__ import annotations

import argparse
import os
import sys
import time

from ros_seg.cli.arguments import image_size
from ros_seg.data.synthetic_scenes import write_dataset


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="write synthetic Cityscapes-like scenes (images + semantic/instance/panoptic ground truth)",
        description="Generate procedural street scenes (road, sidewalks, buildings, vegetation, poles, signs, "
        "lights; cars, trucks, buses, trams, pedestrians, riders, bicycles, motorcycles with occlusions) and write "
        "them in the exact Cityscapes layout: leftImg8bit/SPLIT/CITY/*_leftImg8bit.png, "
        "gtFine/SPLIT/CITY/*_gtFine_{labelIds,instanceIds,color}.png and the panoptic ground truth "
        "gtFine/cityscapes_panoptic_SPLIT.json + gtFine/cityscapes_panoptic_SPLIT/*.png as "
        "cityscapesScripts' createPanopticImgs writes it. The same seed gives the same files. "
        "With --sequence the frames are consecutive 17 Hz frames of one drive (for replay demos); "
        "otherwise every frame is an independent scene. The split folder must not hold images yet.",
    )
    p.add_argument("--out", required=True, help="dataset root to write (created if missing)")
    p.add_argument("--n", type=int, required=True, help="number of frames")
    p.add_argument("--split", choices=("train", "val"), default="train", help="split to write (default train)")
    p.add_argument("--size", type=image_size, default=(512, 1024), help="frame HxW (default 512x1024)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--sequence", action="store_true", help="consecutive frames of one drive instead of independent scenes"
    )
    p.add_argument(
        "--workers", type=int, default=None, metavar="N",
        help="processes rendering frames (default: one per CPU core available); the files do not depend on it",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    workers = args.workers if args.workers is not None else len(os.sched_getaffinity(0))
    try:
        names = write_dataset(
            args.out, args.n, split=args.split, size=args.size, seed=args.seed, sequence=args.sequence,
            workers=workers,
        )
    except (ValueError, OSError) as exc:
        print(f"ros-seg synth: error: {exc}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start
    workers = min(workers, len(names))  # write_dataset starts no more processes than frames
    print(f"wrote {len(names)} {args.split} frames of {args.size[0]}x{args.size[1]} to {args.out} in {elapsed:.1f} s"
          f" with {workers} worker process{'es' if workers > 1 else ''}")
    return 0
