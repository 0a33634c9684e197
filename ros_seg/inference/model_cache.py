"""Where exported models and built engines are cached, and the content hashes that key them.

The cache lives in ``$ROS_SEG_CACHE`` when set, else ``$XDG_CACHE_HOME/ros_seg``
(``~/.cache/ros_seg``). Entries are keyed by content hashes, so a changed
weights file or ONNX model never reuses a stale entry; deleting the folder is
always safe.

Entries are written atomically and fsynced (`durable_replace`), and the SHA-256
of each finished entry is recorded beside it (`record_entry`, `NAME.sha256`).
Before an entry is used, `intact_entry` compares the two: an entry that was
truncated, changed, or whose writer was killed before the record, is deleted
with a warning and built again.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

DIGEST_SUFFIX = ".sha256"


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


def durable_replace(tmp: str | Path, path: str | Path) -> None:
    """Move the finished file `tmp` over `path` so that after a crash `path` is the old file or all of the new one:
    `tmp`'s data reaches the disk before the rename, and the rename before this returns."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    folder = os.open(Path(path).parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def _digest_record(path: Path) -> Path:
    return path.with_name(path.name + DIGEST_SUFFIX)


def record_entry(path: str | Path) -> None:
    """Record the SHA-256 of the finished cache entry `path` beside it, durably."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(file_digest(path, 64) + "\n")
        durable_replace(tmp, _digest_record(path))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def intact_entry(path: str | Path) -> bool:
    """Whether the cache entry `path` exists and its content has the SHA-256 recorded for it. An entry that does
    not (truncated, changed, or left without its record by a killed writer) is deleted, with a warning."""
    path = Path(path)
    if not path.is_file():
        return False
    record = _digest_record(path)
    try:
        recorded = record.read_text().strip()
    except OSError:
        recorded = None
    if recorded == file_digest(path, 64):
        return True
    log.warning("cache entry %s does not match its recorded checksum (truncated, changed or never finished): "
                "building it again", path)
    path.unlink(missing_ok=True)
    record.unlink(missing_ok=True)
    return False
