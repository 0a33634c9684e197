"""Reading replay bags: the camera frames of one image topic with their ground truth, in order.

    with ReplayBag("val_bag") as bag:
        topic = bag.select_image_topic(None)       # the only image topic, or ValueError listing them
        for frame in bag.frames(topic):
            image, encoding = frame.decode()
            truth = frame.ground_truth              # None when the bag has no ground truth

Opens rosbag2 folders (mcap or sqlite3, found from metadata.yaml) and bare
`.mcap` / `.db3` files with `rosbags`. Ground truth (the `/ground_truth/*`
topics that `ros-seg make-bag` writes) is matched to frames by header stamp.
Problems are reported as FileNotFoundError or ValueError with a one-line
message naming the bag, the topic or the frame.
"""
from __future__ import annotations

import itertools
import sqlite3
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import apsw
import numpy as np
from rosbags.interfaces import Connection
from rosbags.rosbag2 import Reader
from rosbags.rosbag2.errors import ReaderError

from ros_seg.models.class_metadata import CITYSCAPES, ClassMetadata
from ros_seg.replay.bag_types import (
    IMAGE,
    IMAGE_TYPES,
    SEGMENT_ARRAY,
    GroundTruth,
    crowd_ids,
    image_array,
    replay_typestore,
    segment_classes,
    stamp_ns,
)
from ros_seg.replay.bag_writer import GT_PANOPTIC_TOPIC, GT_SEGMENTS_TOPIC, GT_SEMANTIC_TOPIC, RATE_KEY

GROUND_TRUTH_NAMESPACE = "/ground_truth/"
GT_TOPICS = (GT_SEMANTIC_TOPIC, GT_PANOPTIC_TOPIC, GT_SEGMENTS_TOPIC)
# A frame whose ground truth has not come within this much bag time after its first message is given up on.
MATCH_WINDOW_NS = 2_000_000_000
# What a damaged bag raises while it is opened or read.
_BAG_ERRORS = (ReaderError, sqlite3.Error, apsw.Error, struct.error, EOFError, IndexError, KeyError, UnicodeDecodeError)


def ground_truth_of(semantic: Any, panoptic: Any, segments: Any, metadata: ClassMetadata) -> GroundTruth:
    """GroundTruth of deserialized semantic / panoptic Images and a SegmentArray, sizes checked."""
    semantic_map, semantic_encoding = image_array(semantic)
    panoptic_map, panoptic_encoding = image_array(panoptic)
    if semantic_encoding != "mono8" or panoptic_encoding != "32SC1":
        raise ValueError(
            f"ground truth must be mono8 semantic and 32SC1 panoptic images, got {semantic_encoding} and "
            f"{panoptic_encoding}"
        )
    if semantic_map.shape[:2] != panoptic_map.shape:
        raise ValueError(
            f"ground-truth semantic image is {semantic_map.shape[1]}x{semantic_map.shape[0]} but the panoptic one "
            f"is {panoptic_map.shape[1]}x{panoptic_map.shape[0]}"
        )
    classes = segment_classes(segments)
    return GroundTruth(semantic_map.reshape(panoptic_map.shape), panoptic_map, classes, crowd_ids(classes, metadata))


@dataclass
class BagFrame:
    """One camera message of a bag and the ground truth with the same stamp.

    Args:
        index: position on its topic (0, 1, ...).
        stamp: header stamp in ns (outputs of the node carry the same one).
        log_time: bag timestamp in ns (when it was recorded; the replay timing).
        msgtype: sensor_msgs/msg/Image or sensor_msgs/msg/CompressedImage.
        raw: the serialized message as recorded (CDR).
        message: the deserialized message.
        ground_truth: the frame's ground truth, None when the bag has none.
    """

    index: int
    stamp: int
    log_time: int
    msgtype: str
    raw: bytes | memoryview
    message: Any
    ground_truth: GroundTruth | None = None

    def decode(self) -> tuple[np.ndarray, str]:
        """The image as an (H, W, C) uint8 array and its encoding (compressed images decoded to bgr8)."""
        image, encoding = image_array(self.message)
        if image.ndim != 3:
            raise ValueError(f"frame {self.index} has a {encoding} label image, not a camera image")
        if self.ground_truth is not None:
            check_ground_truth_size(self.ground_truth, image.shape[:2], self.index)
        return image, encoding


@dataclass
class _Pending:
    """A stamp seen on some of the topics that make up a frame."""

    first_log_time: int
    frame: BagFrame | None = None
    truth: dict[str, Any] = field(default_factory=dict)


class ReplayBag:
    """An open rosbag2 of camera frames (and optionally ground truth), read with `rosbags`.

    Args:
        path: bag folder (with metadata.yaml) or a bare .mcap / .db3 file.
        metadata: the label set of the ground truth (for crowd regions).

    Raises:
        FileNotFoundError: the bag does not exist.
        ValueError: it is not a readable rosbag2.
    """

    def __init__(self, path: str | Path, metadata: ClassMetadata = CITYSCAPES) -> None:
        self.path = Path(path)
        self.metadata = metadata
        if not self.path.exists():
            raise FileNotFoundError(f"bag {self.path} does not exist")
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except FileNotFoundError:
            raise ValueError(
                f"{self.path} is not a rosbag2: it has no metadata.yaml and is no .mcap/.db3 file"
            ) from None
        except _BAG_ERRORS + (ValueError, TypeError, AttributeError) as exc:
            raise ValueError(f"cannot read bag {self.path} (corrupt or not a rosbag2): {_one_line(exc)}") from None
        self.topics: dict[str, Connection] = {}
        for connection in self._reader.connections:
            self.topics.setdefault(connection.topic, connection)
        expected = dict(zip(GT_TOPICS, (IMAGE, IMAGE, SEGMENT_ARRAY)))
        for topic, msgtype in expected.items():
            if topic in self.topics and self.topics[topic].msgtype != msgtype:
                raise ValueError(f"{topic} of bag {self.path} is {self.topics[topic].msgtype}, expected {msgtype}")

    def close(self) -> None:
        """Close the bag's files."""
        if self._reader.is_open:
            self._reader.close()

    def __enter__(self) -> ReplayBag:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    @property
    def image_topics(self) -> list[str]:
        """Camera topics: Image or CompressedImage topics outside /ground_truth/."""
        return sorted(
            topic for topic, connection in self.topics.items()
            if connection.msgtype in IMAGE_TYPES and not topic.startswith(GROUND_TRUTH_NAMESPACE)
        )

    @property
    def has_ground_truth(self) -> bool:
        """True when the bag has all three ground-truth topics."""
        return all(topic in self.topics for topic in GT_TOPICS)

    @property
    def ros_distro(self) -> str | None:
        """The ROS distribution that wrote the bag, as its metadata says."""
        return self._reader.ros_distro

    def select_image_topic(self, topic: str | None) -> str:
        """`topic` checked to be a camera topic of the bag, or the bag's only camera topic when None."""
        found = self.image_topics
        if topic is not None:
            if topic not in found:
                listed = ", ".join(found) if found else "none"
                raise ValueError(f"bag {self.path} has no image topic {topic!r}; its image topics: {listed}")
            return topic
        if not found:
            listed = ", ".join(f"{t} ({c.msgtype})" for t, c in sorted(self.topics.items())) or "no topics"
            raise ValueError(
                f"bag {self.path} has no sensor_msgs/Image or CompressedImage topic to replay (it has {listed})"
            )
        if len(found) > 1:
            raise ValueError(f"bag {self.path} has several image topics, choose one with --topic: {', '.join(found)}")
        return found[0]

    def frame_count(self, topic: str) -> int:
        """Number of messages on `topic`."""
        return sum(c.msgcount for c in self._reader.connections if c.topic == topic)

    def rate_hz(self, topic: str) -> float | None:
        """Frame rate of `topic`: as `make-bag` recorded it, else from its message count and the bag's duration."""
        custom = self._reader.storage.metadata.custom or {}
        if RATE_KEY in custom:
            return float(custom[RATE_KEY])
        count, duration = self.frame_count(topic), self._reader.duration
        return (count - 1) * 1e9 / duration if count > 1 and duration > 0 else None

    def frames(self, topic: str, max_frames: int | None = None) -> Iterator[BagFrame]:
        """Frames of `topic` in recording order, each with its ground truth when the bag has some.

        Raises ValueError for a damaged bag, a frame without its ground truth, or
        ground truth whose size differs from its image.
        """
        try:
            yield from itertools.islice(self._matched_frames(topic), max_frames)
        except _BAG_ERRORS as exc:
            raise ValueError(f"cannot read bag {self.path} (corrupt?): {_one_line(exc)}") from None

    def _matched_frames(self, topic: str) -> Iterator[BagFrame]:
        """Frames of `topic` joined with the ground-truth messages of the same stamp."""
        store = replay_typestore()
        with_truth = self.has_ground_truth
        wanted = [c for c in self._reader.connections if c.topic == topic or (with_truth and c.topic in GT_TOPICS)]
        pending: dict[int, _Pending] = {}
        count = 0
        for connection, log_time, raw in self._reader.messages(connections=wanted):
            msg = store.deserialize_cdr(raw, connection.msgtype)
            stamp = stamp_ns(msg.header)
            entry = pending.setdefault(stamp, _Pending(log_time))
            if connection.topic == topic:
                entry.frame = BagFrame(count, stamp, log_time, connection.msgtype, raw, msg)
                count += 1
            else:
                entry.truth[connection.topic] = msg
            yield from self._ready(pending, log_time, with_truth)
        yield from self._ready(pending, None, with_truth)

    def _ready(self, pending: dict[int, _Pending], now: int | None, with_truth: bool) -> Iterator[BagFrame]:
        """Frames complete with their ground truth, and (at `now` = None, the end) every frame left."""
        for stamp in sorted(pending):
            entry = pending[stamp]
            complete = entry.frame is not None and (not with_truth or len(entry.truth) == len(GT_TOPICS))
            stale = now is None or now - entry.first_log_time > MATCH_WINDOW_NS
            if not (complete or stale):
                continue
            del pending[stamp]
            if entry.frame is None:
                continue
            if with_truth:
                entry.frame.ground_truth = self._matched_truth(entry.frame, entry.truth)
            yield entry.frame

    def _matched_truth(self, frame: BagFrame, truth_messages: dict[str, Any]) -> GroundTruth:
        """The ground truth of a frame, checked to be complete and, for raw images, of the image's size."""
        missing = [t for t in GT_TOPICS if t not in truth_messages]
        if missing:
            raise ValueError(
                f"frame {frame.index} (stamp {frame.stamp} ns) of bag {self.path} has no message with its stamp "
                f"on {', '.join(missing)}"
            )
        truth = ground_truth_of(*(truth_messages[t] for t in GT_TOPICS), self.metadata)
        if frame.msgtype == IMAGE:
            check_ground_truth_size(truth, (frame.message.height, frame.message.width), frame.index)
        return truth


def check_ground_truth_size(truth: GroundTruth, image_size: tuple[int, int], index: int) -> None:
    """ValueError when the ground truth of frame `index` is not of its image's (H, W) size."""
    if truth.panoptic.shape != tuple(image_size):
        raise ValueError(
            f"the ground truth of frame {index} is {truth.panoptic.shape[1]}x{truth.panoptic.shape[0]} but its "
            f"image is {image_size[1]}x{image_size[0]}: give ground truth of the image's size"
        )


def _one_line(exc: BaseException) -> str:
    """An exception as one line: its type and first line of text."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
