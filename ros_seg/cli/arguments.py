"""Argument types and output helpers shared by the `ros-seg` subcommands."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def image_size(text: str) -> tuple[int, int]:
    """'HxW' (e.g. 1024x2048) -> (H, W)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like HEIGHTxWIDTH (e.g. 1024x2048), got {text!r}") from None
    if h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return h, w


def positive_rate(text: str) -> float:
    """A frame rate > 0 in Hz."""
    try:
        rate = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"rate must be a number of frames per second, got {text!r}") from None
    if not rate > 0:
        raise argparse.ArgumentTypeError(f"rate must be > 0, got {text!r}")
    return rate


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        metavar="OUT",
        nargs="?",
        const="-",
        default=None,
        help="write the result as one JSON object to OUT ('-' or no value: stdout)",
    )


def write_json(obj: Any, dest: str) -> None:
    """Write one JSON object to a file path or '-' (stdout)."""
    text = json.dumps(obj, indent=2, sort_keys=False)
    if dest == "-":
        sys.stdout.write(text + "\n")
        return
    path = Path(dest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
