"""Where exported models and built engines are cached, and the content hashes that key them.

The cache lives in ``$ROS_SEG_CACHE`` when set, else ``$XDG_CACHE_HOME/ros_seg``
(``~/.cache/ros_seg``). Entries are keyed by content hashes, so a changed
weights file or ONNX model never reuses a stale entry; deleting the folder is
always safe.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_dir(kind: str) -> Path:
    """The cache folder for one kind of entry ("onnx", "tensorrt"), created if missing."""
    root = os.environ.get("ROS_SEG_CACHE")
    if root is None:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "ros_seg")
    path = Path(root) / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


def file_digest(path: str | Path, length: int = 16) -> str:
    """The first `length` hex digits of the file's SHA-256."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:length]


def text_digest(text: str, length: int = 16) -> str:
    """The first `length` hex digits of the SHA-256 of `text` (UTF-8)."""
    return hashlib.sha256(text.encode()).hexdigest()[:length]
