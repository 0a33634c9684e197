"""Writing replay bags: camera frames and their ground truth as a rosbag2 (mcap or sqlite3).

    write_bag("cityscapes/", "val.mcap", split="val", rate_hz=17.0)

Frames come from a Cityscapes-layout folder (real Cityscapes with
createPanopticImgs output, or `ros-seg synth`) or from a plain folder of
images (no ground truth). Each frame is written at `start + i / rate` as

- the image on the camera topic (sensor_msgs/Image rgb8), or on
  `{camera topic}/compressed` (sensor_msgs/CompressedImage, jpeg or png);
- sensor_msgs/CameraInfo on the camera's `camera_info` sibling topic;
- with ground truth: `/ground_truth/semantic` (mono8 train ids),
  `/ground_truth/panoptic` (32SC1 segment ids) and `/ground_truth/segments`
  (ros_seg/SegmentArray);

all with the same header (stamp and frame_id), logged at the stamp. The bag
(metadata.yaml included) is written by `rosbags`, so `ros2 bag info` and
`ros2 bag play` read it.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.rosbag2.errors import WriterError
from tqdm import tqdm

from ros_seg.data import cityscapes_layout as layout
from ros_seg.data.cityscapes import CityscapesDataset
from ros_seg.data.panoptic_ground_truth import ground_truth_panoptic
from ros_seg.models.class_metadata import CITYSCAPES, ClassMetadata
from ros_seg.replay.bag_types import (
    BAG_VERSION,
    CAMERA_INFO,
    COMPRESSED_FORMATS,
    COMPRESSED_IMAGE,
    IMAGE,
    SEGMENT_ARRAY,
    GroundTruth,
    camera_info_message,
    compressed_image_message,
    crowd_ids,
    image_message,
    replay_typestore,
    segment_array_message,
)
from ros_seg.replay.mcap_chunk_crc import write_chunk_crcs

STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
GT_SEMANTIC_TOPIC = "/ground_truth/semantic"
GT_PANOPTIC_TOPIC = "/ground_truth/panoptic"
GT_SEGMENTS_TOPIC = "/ground_truth/segments"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm")
# custom_data keys of metadata.yaml that the reader uses.
RATE_KEY = "ros_seg.rate_hz"
SOURCE_KEY = "ros_seg.source"
_NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class SourceFrame:
    """One frame to write: its name, (H, W, 3) RGB image and ground truth (None without)."""

    name: str
    image: np.ndarray
    ground_truth: GroundTruth | None


@dataclass(frozen=True)
class FrameSource:
    """Frames of a folder: how many, whether they have ground truth, and a reader of frame i."""

    count: int
    has_ground_truth: bool
    frame: Callable[[int], SourceFrame]


def camera_info_topic(camera_topic: str) -> str:
    """`/ns/image_raw` -> `/ns/camera_info`, the image_transport convention."""
    namespace = camera_topic.rsplit("/", 1)[0]
    return f"{namespace}/camera_info"


def _resize_nearest(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) label map resized to (h, w) without mixing labels."""
    if labels.shape == size:
        return labels
    return cv2.resize(labels, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)


def _resized(frame: SourceFrame, size: tuple[int, int] | None) -> SourceFrame:
    """The frame at (H, W) `size`: the image by area averaging, ground truth by nearest neighbour."""
    if size is None or frame.image.shape[:2] == tuple(size):
        return frame
    image = cv2.resize(frame.image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    truth = frame.ground_truth
    if truth is not None:
        panoptic = _resize_nearest(truth.panoptic, size)
        present = set(np.unique(panoptic).tolist())
        segments = {i: c for i, c in truth.segments.items() if i in present}
        truth = GroundTruth(_resize_nearest(truth.semantic, size), panoptic, segments,
                            tuple(i for i in truth.crowd if i in present))
    return SourceFrame(frame.name, image, truth)


def cityscapes_source(root: Path, split: str, metadata: ClassMetadata) -> FrameSource:
    """Frames of a Cityscapes-layout split; panoptic ground truth when its json exists, else semantic."""
    task = "panoptic" if layout.panoptic_json_path(root, split).is_file() else "semantic"
    dataset = CityscapesDataset(root, split, task, metadata=metadata)

    def frame(index: int) -> SourceFrame:
        sample = dataset[index]
        panoptic, segments, _ = ground_truth_panoptic(sample)
        truth = GroundTruth(sample["semantic"], panoptic.astype(np.int32), segments, crowd_ids(segments, metadata))
        return SourceFrame(sample["name"], sample["image"], truth)

    return FrameSource(len(dataset), True, frame)


def image_folder_source(folder: Path) -> FrameSource:
    """Frames of a plain folder of images (sorted by name), without ground truth."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise FileNotFoundError(
            f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}) and no Cityscapes layout (leftImg8bit/)"
        )

    def frame(index: int) -> SourceFrame:
        image = cv2.imread(str(files[index]), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"cannot read {files[index]} as an image")
        return SourceFrame(files[index].stem, cv2.cvtColor(image, cv2.COLOR_BGR2RGB), None)

    return FrameSource(len(files), False, frame)


def frame_source(data: Path, split: str, metadata: ClassMetadata = CITYSCAPES) -> FrameSource:
    """A Cityscapes-layout folder (with `leftImg8bit/`) or a plain folder of images."""
    data = Path(data)
    if not data.is_dir():
        raise FileNotFoundError(f"data folder {data} does not exist")
    if (data / "leftImg8bit").is_dir():
        return cityscapes_source(data, split, metadata)
    return image_folder_source(data)


class ReplayBagWriter:
    """A new rosbag2 holding camera frames and, optionally, their ground truth.

    Args:
        path: bag folder to create (must not exist).
        storage: "mcap" or "sqlite3".
        camera_topic: topic of sensor_msgs/Image frames (CompressedImage go to `{camera_topic}/compressed`).
        frame_id: frame_id of every header.
        compressed: None for raw rgb8 images, else "jpeg" or "png".
        ground_truth: write the ground-truth topics.
        metadata: the label set (class names and thing flags of the segments).
        custom_data: extra string pairs for metadata.yaml's custom_data.
    """

    def __init__(
        self,
        path: Path,
        storage: str = "mcap",
        camera_topic: str = "/camera/image_raw",
        frame_id: str = "camera",
        compressed: str | None = None,
        ground_truth: bool = True,
        metadata: ClassMetadata = CITYSCAPES,
        custom_data: dict[str, str] | None = None,
    ) -> None:
        if storage not in STORAGES:
            raise ValueError(f"unknown bag storage {storage!r}: use one of {', '.join(STORAGES)}")
        if compressed is not None and compressed not in COMPRESSED_FORMATS:
            raise ValueError(f"unknown compression {compressed!r}: use one of {', '.join(COMPRESSED_FORMATS)}")
        if not camera_topic.startswith("/") or camera_topic.endswith("/"):
            raise ValueError(
                f"camera topic must be an absolute topic name like /camera/image_raw, got {camera_topic!r}"
            )
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f"{self.path} exists already: choose a new bag path or delete it")
        self.frame_id = frame_id
        self.compressed = compressed
        self.metadata = metadata
        self.frames = 0
        self._writer = Writer(self.path, version=BAG_VERSION, storage_plugin=STORAGES[storage])
        for key, value in (custom_data or {}).items():
            self._writer.set_custom_data(key, value)
        self._writer.open()
        store = replay_typestore()
        image_topic, image_type = (
            (f"{camera_topic}/compressed", COMPRESSED_IMAGE) if compressed else (camera_topic, IMAGE)
        )
        topics = [(image_topic, image_type), (camera_info_topic(camera_topic), CAMERA_INFO)]
        if ground_truth:
            topics += [(GT_SEMANTIC_TOPIC, IMAGE), (GT_PANOPTIC_TOPIC, IMAGE), (GT_SEGMENTS_TOPIC, SEGMENT_ARRAY)]
        self._connections = {
            topic: self._writer.add_connection(topic, msgtype, typestore=store) for topic, msgtype in topics
        }
        self.image_topic = image_topic
        self._has_ground_truth = ground_truth

    def write_frame(self, stamp: int, image: np.ndarray, truth: GroundTruth | None) -> None:
        """Write one (H, W, 3) RGB frame at `stamp` (ns), with its ground truth when the bag has some."""
        height, width = image.shape[:2]
        if self.compressed:
            frame = compressed_image_message(image, self.compressed, stamp, self.frame_id)
        else:
            frame = image_message(np.ascontiguousarray(image), "rgb8", stamp, self.frame_id)
        messages = [frame, camera_info_message(height, width, stamp, self.frame_id)]
        if self._has_ground_truth:
            if truth is None:
                raise ValueError(f"frame {self.frames} has no ground truth, but the bag has ground-truth topics")
            messages += [
                image_message(truth.semantic, "mono8", stamp, self.frame_id),
                image_message(truth.panoptic, "32SC1", stamp, self.frame_id),
                segment_array_message(truth, self.metadata, stamp, self.frame_id),
            ]
        store = replay_typestore()
        for connection, msg in zip(self._connections.values(), messages):
            self._writer.write(connection, stamp, store.serialize_cdr(msg, msg.__msgtype__))
        self.frames += 1

    def close(self) -> None:
        """Finish the bag (its index and metadata.yaml; the CRCs of an mcap file's chunks)."""
        self._writer.close()
        for mcap_file in self.path.glob("*.mcap"):
            write_chunk_crcs(mcap_file)

    def __enter__(self) -> ReplayBagWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        """Close the bag, also after an error or Ctrl-C, so the frames written so far stay readable."""
        self.close()


@dataclass(frozen=True)
class BagSummary:
    """What `write_bag` wrote."""

    path: Path
    frames: int
    image_topic: str
    ground_truth: bool
    size: tuple[int, int]
    duration_s: float


def write_bag(
    data: Path,
    out: Path,
    split: str = "val",
    storage: str = "mcap",
    rate_hz: float = 17.0,
    compressed: str | None = None,
    size: tuple[int, int] | None = None,
    camera_topic: str = "/camera/image_raw",
    frame_id: str = "camera",
    max_frames: int | None = None,
    start_ns: int | None = None,
    progress: bool = False,
) -> BagSummary:
    """Write the frames of `data` (Cityscapes layout or plain images) to the bag `out`.

    Args:
        data: Cityscapes-layout root or folder of images.
        out: bag folder to create.
        split: Cityscapes split to read.
        storage: "mcap" (default) or "sqlite3".
        rate_hz: frame rate of the stamps.
        compressed: None (raw rgb8) or "jpeg" / "png".
        size: (H, W) frames and ground truth are resized to; None keeps their size.
        camera_topic: image topic.
        frame_id: header frame_id.
        max_frames: write at most this many frames.
        start_ns: stamp of the first frame (default: now).
        progress: show a progress bar.

    Raises:
        FileNotFoundError: no data folder or no images in it; FileExistsError: `out` exists;
        ValueError: bad arguments or unreadable data.
    """
    if not 1e-3 <= rate_hz <= 1e9:  # distinct nanosecond stamps, within int64 for up to 9 million frames
        raise ValueError(f"--rate must be between 1e-3 and 1e9 frames per second, got {rate_hz}")
    source = frame_source(Path(data), split)
    count = source.count if max_frames is None else min(source.count, max_frames)
    start = time.time_ns() if start_ns is None else start_ns
    custom = {RATE_KEY: repr(float(rate_hz)), SOURCE_KEY: str(data)}
    out = Path(out)
    try:
        writer = ReplayBagWriter(out, storage, camera_topic, frame_id, compressed, source.has_ground_truth,
                                 custom_data=custom)
    except WriterError as exc:
        raise OSError(f"cannot create bag {out}: {exc}") from None
    frame_size: tuple[int, int] = (0, 0)
    with writer:
        for index in tqdm(range(count), desc="writing bag", unit="frame", disable=not progress):
            frame = _resized(source.frame(index), size)
            frame_size = frame.image.shape[:2]
            writer.write_frame(start + round(index * _NS_PER_S / rate_hz), frame.image, frame.ground_truth)
    return BagSummary(out, count, writer.image_topic, source.has_ground_truth, frame_size, count / rate_hz)
