"""The `ros-seg` command: describe, synth, train, eval, metrics, make-bag, replay, export, bench, convert, zoo, segment.

Each subcommand lives in its own module with `register(subparsers)` and a
`run(args) -> int`. Exit codes: 0 success, 2 bad arguments or unreadable
inputs (one line on stderr saying why; ROS_SEG_DEBUG=1 shows the traceback).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

COMMANDS = (
    "describe", "segment", "synth", "train", "eval", "metrics", "make-bag", "replay", "export", "bench", "convert",
    "zoo", "demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ros-seg",
        description="Efficient universal segmentation (PEM, Mask2Former + PRO-SCALE, Panoptic SegFormer) "
        "for ROS 2 robots: models, training, evaluation, rosbag replay, export and benchmarks.",
        epilog="Run `ros-seg COMMAND --help` for the options of a command.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"ros_seg.cli.{name.replace('-', '_')}")
        except ModuleNotFoundError as exc:
            if not exc.name or exc.name.split(".")[0] == "ros_seg":
                raise
            _register_unavailable(sub, name, exc.name.split(".")[0])
            continue
        module.register(sub)
    return parser


# Python packages that come with an extra of the pip package (pyproject.toml) rather than with its core.
EXTRA_OF_PACKAGE = {
    "rosbags": "replay", "apsw": "replay", "matplotlib": "replay", "onnx": "onnx", "onnxruntime": "onnx",
}


def _register_unavailable(sub: argparse._SubParsersAction, name: str, package: str) -> None:
    """A subcommand whose Python package is missing here (say rosbags on a GPU box holding only PyTorch):
    the other commands keep working, and this one says what to install."""
    p = sub.add_parser(name, help=f"(unavailable here: needs the Python package {package!r})", add_help=False)
    extra = EXTRA_OF_PACKAGE.get(package)
    install = f"pip install 'ros_seg[{extra}]'" if extra else "pip install -r requirements/core.txt"

    def run(args: argparse.Namespace) -> int:
        print(f"ros-seg {name}: error: this command needs the Python package {package!r}, which is not installed: "
              f"run scripts/setup.sh (or {install})", file=sys.stderr)
        return 2

    p.set_defaults(func=run, takes_any_arguments=True)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "takes_any_arguments", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as exc:
        if os.environ.get("ROS_SEG_DEBUG"):
            raise
        print(f"ros-seg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ros-seg {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
