"""Argument types and output helpers shared by the `ros-seg` subcommands."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

MAX_IMAGE_SIDE = 16384
"""Largest image height or width a command takes (16384x16384 RGB is already 805 MB)."""
RATE_RANGE = (1e-3, 1e6)
"""Smallest and largest rate (frames per second, or replay speed factor) a command takes."""


def image_size(text: str) -> tuple[int, int]:
    """'HxW' (e.g. 1024x2048) -> (H, W)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like HEIGHTxWIDTH (e.g. 1024x2048), got {text!r}") from None
    if not (0 < h <= MAX_IMAGE_SIDE and 0 < w <= MAX_IMAGE_SIDE):
        raise argparse.ArgumentTypeError(f"size must be positive and at most {MAX_IMAGE_SIDE} per side, got {text!r}")
    return h, w


def weights_file(text: str) -> str:
    """A --weights value: a file as given, or zoo:NAME resolved to its converted checkpoint in the zoo cache
    (never downloaded here: an entry not pulled yet is an error naming `ros-seg zoo pull NAME`)."""
    from ros_seg.inference.zoo_catalogue import ZOO_PREFIX, ZooError

    if not text.startswith(ZOO_PREFIX):
        return text
    from ros_seg.inference.model_zoo import zoo_weights

    try:
        return str(zoo_weights(text))
    except ZooError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_rate(text: str) -> float:
    """A finite rate in RATE_RANGE (frames per second, or a speed factor)."""
    try:
        rate = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"rate must be a number of frames per second, got {text!r}") from None
    low, high = RATE_RANGE
    if not low <= rate <= high:
        raise argparse.ArgumentTypeError(f"rate must be between {low:g} and {high:g}, got {text!r}")
    return rate


def positive_int(text: str) -> int:
    """An integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return value


def json_destination(text: str) -> str:
    """'-' (stdout) or a file path in a folder that exists (checked before the work, not after it)."""
    if text != "-" and not Path(text).parent.is_dir():
        raise argparse.ArgumentTypeError(f"folder {Path(text).parent} does not exist: create it first or give "
                                         "another path")
    return text


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        metavar="OUT",
        nargs="?",
        const="-",
        default=None,
        type=json_destination,
        help="write the result as one JSON object to OUT ('-' or no value: stdout)",
    )


def write_json(obj: Any, dest: str) -> None:
    """Write one JSON object to a file path or '-' (stdout)."""
    text = json.dumps(obj, indent=2, sort_keys=False)
    if dest == "-":
        sys.stdout.write(text + "\n")
        return
    Path(dest).write_text(text + "\n")
