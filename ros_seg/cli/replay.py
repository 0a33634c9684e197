"""`ros-seg replay`: rosbag replay evaluation of a model, live through the ROS node or offline in-process."""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
from pathlib import Path
from typing import Any

import torch

from ros_seg.cli.arguments import positive_rate, weights_file
from ros_seg.eval.machine_info import machine_info
from ros_seg.inference.backends.selection import BACKENDS
from ros_seg.inference.backends.torch_backend import PRECISIONS
from ros_seg.inference.segmenter import resolve_device
from ros_seg.models.checkpoint import read_checkpoint
from ros_seg.models.class_metadata import ClassMetadata, class_metadata
from ros_seg.models.registry import load_model_config
from ros_seg.replay.bag_reader import ReplayBag
from ros_seg.replay.replay_report import ReplayResult, write_report

INPUT_QOS = ("sensor_data", "reliable")
INTERRUPTED = 130


def replay_rate(text: str) -> float | None:
    """'max' -> None (as fast as the node answers), else a speed factor > 0 over the recorded timing."""
    if text == "max":
        return None
    try:
        return positive_rate(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"rate must be a number > 0 or 'max', got {text!r}") from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "replay",
        help="replay a rosbag through a model and report accuracy, latency, rate and drops",
        description="Replay the camera frames of a rosbag2 (mcap or sqlite3, e.g. from `ros-seg make-bag`) and "
        "write report.json, report.md and plots to --out. --live (default) starts the segmentation_node as its "
        "own process, publishes the frames over DDS at the recorded timing x --rate (or, with --rate max, each "
        "frame once the previous one was answered), matches outputs to inputs by header stamp and measures "
        "end-to-end latency, output rate, dropped frames and jitter. DDS stays on this machine "
        "(ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST) on ROS_DOMAIN_ID, or --ros-domain-id, or a private domain. "
        "--offline runs every frame through the model in this process (no drops) and splits the time into bag "
        "I/O, model and scoring. Accuracy (mIoU, PQ) is scored against the bag's /ground_truth topics or --gt. "
        "Ctrl-C writes a partial report and exits 130.",
    )
    p.add_argument("bag", metavar="BAG", help="rosbag2 folder (or a bare .mcap / .db3 file)")
    p.add_argument("--model", required=True, help="model name (e.g. pem_stdc1) or config file")
    p.add_argument("--weights", default=None, metavar="CKPT", type=weights_file,
                   help="ros_seg checkpoint (or .onnx / .engine for those backends), or zoo:NAME; none: random weights")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for report.json, report.md and plots")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--live", dest="mode", action="store_const", const="live",
                      help="through the ROS 2 segmentation_node over DDS (default)")
    mode.add_argument("--offline", dest="mode", action="store_const", const="offline",
                      help="in-process, every frame, no ROS")
    p.add_argument("--rate", type=replay_rate, default=1.0, metavar="R|max",
                   help="live: speed over the recorded timing (default 1), or max")
    p.add_argument("--topic", default=None, help="image topic to replay (needed when the bag has several)")
    p.add_argument("--gt", default=None, metavar="DIR",
                   help="Cityscapes-layout ground truth matching the bag's frames in order (offline), "
                   "instead of the bag's /ground_truth topics")
    p.add_argument("--gt-split", default="val", help="split of --gt (default val)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--backend", choices=BACKENDS, default="torch", help="inference backend (default torch)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="default fp32")
    p.add_argument("--max-frames", type=int, default=None, metavar="N", help="replay at most N frames")
    p.add_argument("--record", default=None, metavar="OUT",
                   help="live: also write the node's outputs to this new mcap bag folder")
    p.add_argument("--qos", choices=INPUT_QOS, default="sensor_data",
                   help="live: QoS of the node's image subscription (default sensor_data, as on a robot)")
    p.add_argument("--ros-domain-id", type=int, default=None, metavar="ID",
                   help="live: ROS_DOMAIN_ID (default: the environment's, else a private one)")
    p.add_argument("--allow-remote-dds", action="store_true",
                   help="live: let DDS discovery leave this machine (to replay across hosts)")
    p.add_argument("--startup-timeout", type=float, default=180.0, metavar="S",
                   help="live: most seconds for the node to load its model and answer a first frame")
    p.set_defaults(func=run, mode="live")


def model_label_set(model: str, weights: str | None, backend: str) -> ClassMetadata:
    """The label set of the model: from a ros_seg checkpoint, else from the model config."""
    if weights is not None and backend == "torch":
        return read_checkpoint(weights).metadata
    return class_metadata(load_model_config(model).dataset)


def _check_args(args: argparse.Namespace) -> None:
    if args.max_frames is not None and args.max_frames < 1:
        raise ValueError(f"--max-frames must be >= 1, got {args.max_frames}")
    if args.mode == "offline":
        used = [flag for flag, value in (("--record", args.record), ("--ros-domain-id", args.ros_domain_id),
                                         ("--allow-remote-dds", args.allow_remote_dds)) if value]
        if used:
            raise ValueError(f"{', '.join(used)} only apply to --live replay")
    elif args.gt is not None:
        raise ValueError("--gt only applies to --offline replay; live replay scores against the bag's ground truth")
    if args.record is not None and Path(args.record).exists():
        raise FileExistsError(f"--record {args.record} exists already: choose a new bag path")


def ros_distro() -> str | None:
    """The sourced ROS 2 distribution, or the rclpy wheels from PyPI when none is sourced."""
    if os.environ.get("ROS_DISTRO"):
        return os.environ["ROS_DISTRO"]
    try:
        return f"PyPI wheels (ros-rclpy {importlib.metadata.version('ros-rclpy')})"
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(args: argparse.Namespace, bag: ReplayBag, topic: str, device: torch.device) -> dict[str, Any]:
    """The report's description of machine, software, model and bag."""
    first = next(bag.frames(topic, 1), None)
    height, width = first.decode()[0].shape[:2] if first is not None else (0, 0)
    info = machine_info(device)
    return {
        "cpu": info["cpu"],
        "gpu": info.get("gpu"),
        "torch": info["torch"],
        "ros_distro": ros_distro(),
        "rmw": os.environ.get("RMW_IMPLEMENTATION") or "rmw_fastrtps_cpp (default)",
        "model": args.model,
        "weights": args.weights or "(random)",
        "backend": args.backend,
        "precision": args.precision,
        "device": str(device),
        "input_resolution": f"{height}x{width}",
        "bag": str(args.bag),
        "bag_topic": topic,
        "bag_frames": bag.frame_count(topic),
        "bag_rate_hz": bag.rate_hz(topic),
        "qos": args.qos if args.mode == "live" else None,
        "cpu_cores": info["cpu_cores"],
        "torch_threads": info["torch_threads"],
        "os": info["os"],
        "python": info["python"],
    }


def _offline(args: argparse.Namespace, bag: ReplayBag, topic: str) -> ReplayResult:
    from ros_seg.inference.segmenter import Segmenter
    from ros_seg.replay.offline_replay import replay_offline

    segmenter = Segmenter(model=args.model, weights=args.weights, device=args.device, precision=args.precision,
                          backend=args.backend)
    env = environment(args, bag, topic, segmenter.device)
    env["precision"] = segmenter.precision
    return replay_offline(bag, segmenter, topic, env, gt_dir=args.gt, gt_split=args.gt_split,
                          max_frames=args.max_frames, progress=sys.stderr.isatty())


def _live(args: argparse.Namespace, bag: ReplayBag, topic: str, out: Path) -> ReplayResult:
    from ros_seg.ros.replay_driver import LiveSettings, replay_live

    settings = LiveSettings(
        model=args.model, weights=args.weights, device=args.device, backend=args.backend, precision=args.precision,
        rate=args.rate, input_qos=args.qos, domain_id=args.ros_domain_id, allow_remote_dds=args.allow_remote_dds,
        record=Path(args.record) if args.record else None, startup_timeout_s=args.startup_timeout,
        log=out / "node.log",
    )
    metadata = model_label_set(args.model, args.weights, args.backend)
    # The node resolves "auto" the same way on this machine.
    return replay_live(bag, topic, settings, metadata, environment(args, bag, topic, resolve_device(args.device)),
                       max_frames=args.max_frames, progress=sys.stderr.isatty())


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    out = Path(args.out)
    with ReplayBag(args.bag) as bag:
        topic = bag.select_image_topic(args.topic)
        if args.mode == "offline" and args.gt is None and not bag.has_ground_truth:
            print(f"ros-seg replay: bag {args.bag} has no /ground_truth topics: accuracy is not scored",
                  file=sys.stderr)
        out.mkdir(parents=True, exist_ok=True)
        result = _offline(args, bag, topic) if args.mode == "offline" else _live(args, bag, topic, out)
    report = write_report(out, result)
    latency = report["latency_ms"]["p50"]
    print(
        f"{report['mode']} replay of {report['frames_in']} frames: {report['frames_processed']} processed, "
        f"{report['frames_dropped']} dropped; mIoU {report['miou']}, PQ {report['pq']}; latency p50 {latency} ms; "
        f"report in {out / 'report.md'}"
    )
    if result.interrupted:
        print("ros-seg replay: interrupted, the report is partial", file=sys.stderr)
        return INTERRUPTED
    return 0
