"""`ros-seg demo`: the whole product in one command.

Generates a short synthetic drive, writes it to an mcap bag, starts the
segmentation node with the demo checkpoint, replays the bag live through it and
writes the accuracy + latency report with overlays and plots. Data and bag are
kept between runs (keyed by their parameters and the scene generator's source),
so a second run only replays.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

from ros_seg.cli.arguments import image_size
from ros_seg.inference.weights_source import DEMO_CHECKPOINT, demo_checkpoint


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="synthetic drive -> bag -> live replay through the node -> report",
        description="Run the demo: `ros-seg synth --sequence` frames of a synthetic drive, `ros-seg make-bag` "
        "(mcap), then `ros-seg replay --live` through segmentation_node with the committed demo checkpoint "
        "(pem_stdc1 trained on synthetic scenes), writing report.md/report.json, overlays and plots to --out. "
        "Uses the GPU when there is one (--device auto).",
    )
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--frames", type=int, default=40, help="frames of the drive (default 40)")
    p.add_argument("--size", type=image_size, default=(256, 512), help="frame size HxW (default 256x512)")
    p.add_argument("--rate", type=float, default=4.0, help="camera rate of the bag in Hz (default 4)")
    p.add_argument("--weights", help=f"checkpoint (default: the demo checkpoint, {DEMO_CHECKPOINT} of the repository)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--seed", type=int, default=7, help="seed of the drive (default 7)")
    p.set_defaults(func=run)


def _prepare_bag(args: argparse.Namespace, work: Path) -> Path:
    """Synthetic frames and their bag, made once per set of parameters and version of the generator."""
    from ros_seg.cli import main
    from ros_seg.data import synthetic_scenes

    generator = hashlib.sha256(Path(synthetic_scenes.__file__).read_bytes()).hexdigest()[:16]
    key = {"frames": args.frames, "size": list(args.size), "rate": args.rate, "seed": args.seed,
           "generator": generator}
    stamp = work / "inputs.json"
    bag = work / "drive_bag"
    if stamp.is_file() and json.loads(stamp.read_text()) == key and bag.is_dir():
        print(f"[demo] reusing the synthetic drive and bag in {work}")
        return bag
    shutil.rmtree(work, ignore_errors=True)
    size = f"{args.size[0]}x{args.size[1]}"
    steps = (
        ["synth", "--out", str(work / "data"), "--n", str(args.frames), "--split", "val", "--size", size,
         "--seed", str(args.seed), "--sequence"],
        ["make-bag", "--data", str(work / "data"), "--split", "val", "--out", str(bag), "--rate", str(args.rate)],
    )
    for step in steps:
        print(f"[demo] ros-seg {' '.join(step)}")
        if main(step) != 0:
            raise ValueError(f"demo step `ros-seg {step[0]}` failed")
    stamp.write_text(json.dumps(key))
    return bag


def run(args: argparse.Namespace) -> int:
    from ros_seg.cli import main

    if args.frames < 1:
        raise ValueError("--frames must be at least 1")
    weights = Path(args.weights) if args.weights else demo_checkpoint()
    if weights is None:
        raise FileNotFoundError(
            f"the demo checkpoint ({DEMO_CHECKPOINT}) is not installed here (the pip wheel leaves it out): "
            "pass --weights CKPT, e.g. the file from a checkout of the repository"
        )
    if not weights.is_file():
        raise FileNotFoundError(f"demo checkpoint {weights} not found: pass --weights CKPT")
    out = Path(args.out)
    bag = _prepare_bag(args, out / "inputs")
    replay = ["replay", str(bag), "--model", "pem_stdc1", "--weights", str(weights), "--device", args.device,
              "--out", str(out), "--live", "--rate", "1", "--qos", "reliable"]
    print(f"[demo] ros-seg {' '.join(replay)}")
    code = main(replay)
    if code != 0:
        return code
    report = json.loads((out / "report.json").read_text())
    latency = report["latency_ms"]
    print()
    print("ros_seg demo")
    print(f"  model     pem_stdc1 ({weights.name}) on {report['environment'].get('device', args.device)}")
    print(f"  frames    {report['frames_in']} in, {report['frames_processed']} processed, "
          f"{report['frames_dropped']} dropped, {report['output_rate_hz']} Hz out")
    print(f"  accuracy  mIoU {report['miou']}  PQ {report['pq']}  (synthetic ground truth)")
    print(f"  latency   p50 {latency['p50']} ms  p95 {latency['p95']} ms  (publish -> all outputs received)")
    print(f"  report    {out.resolve() / 'report.md'}")
    return 0
