"""Damaged bags are reported, never replayed silently: mcap chunk CRCs written by make-bag and checked on read; a
damaged sqlite3 bag is one ValueError naming the bag."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from ros_seg.cli import main
from ros_seg.data.synthetic_scenes import write_dataset
from ros_seg.replay.bag_reader import ReplayBag

PAGE = 4096


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    write_dataset(root, 3, split="val", size=(64, 128), seed=3, sequence=True)
    return root


def _read_all(bag_path: Path) -> int:
    with ReplayBag(bag_path) as bag:
        return sum(1 for _ in bag.frames(bag.select_image_topic(None)))


def _flip_middle_page(path: Path) -> None:
    """Overwrite the 4 KiB page in the middle of `path` with other bytes."""
    offset = path.stat().st_size // 2 // PAGE * PAGE
    with open(path, "r+b") as f:
        f.seek(offset)
        old = f.read(PAGE)
        f.seek(offset)
        f.write(bytes(b ^ random.Random(offset).randrange(1, 256) for b in old))


@pytest.mark.parametrize("storage, suffix, message", [
    ("mcap", ".mcap", r"cannot read bag .*bag_mcap \(corrupt\?\): ReaderError: Chunk checksum mismatch"),
    ("sqlite3", ".db3", r"cannot read bag .*bag_sqlite3 \(corrupt.*\): CorruptError"),
])
def test_flipped_bytes_are_reported(data: Path, tmp_path: Path, storage: str, suffix: str, message: str) -> None:
    bag = tmp_path / f"bag_{storage}"
    assert main(["make-bag", "--data", str(data), "--out", str(bag), "--storage", storage]) == 0
    assert _read_all(bag) == 3
    (file,) = bag.glob(f"*{suffix}")
    _flip_middle_page(file)
    with pytest.raises(ValueError, match=message):
        _read_all(bag)
