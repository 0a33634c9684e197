"""The messages of replay bags for `rosbags` (no ROS 2 install needed): types and numpy conversions.

Bags are written and read with the ROS 2 Humble type definitions of
std_msgs, sensor_msgs and builtin_interfaces (Header, Image, CompressedImage
and CameraInfo are the same in Humble, Jazzy and Kilted, so their bags play on
all three), plus ros_seg's own messages parsed from the package's `msg/*.msg`
files, so segment arrays can be written and read like any other topic.

Ground truth in a bag: `semantic` (mono8 train ids, 255 unlabeled),
`panoptic` (32SC1 segment ids, 0 void) and `segments` (SegmentArray with one
entry per id of the panoptic map). Ground-truth segment ids follow the
Cityscapes instanceIds convention, so a segment of a thing class whose id is
below 1000 is a crowd region (see `ros_seg.data.cityscapes_layout`).
"""
from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore
from scipy import ndimage

from ros_seg.data.cityscapes_layout import INSTANCE_OFFSET
from ros_seg.inference.image_input import ENCODINGS
from ros_seg.models.class_metadata import ClassMetadata

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
SEGMENT_ARRAY = "ros_seg/msg/SegmentArray"
IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)

# rosbag2 metadata version 8 (Iron and later); Humble reads it too, ignoring the fields it does not know.
BAG_VERSION = 8

# Our messages, in dependency order (SegmentArray uses Segment).
_OWN_MESSAGES = ("Segment", "SegmentArray", "SegmentationInfo")


def message_dir() -> Path:
    """The folder of ros_seg's `.msg` files: the package's `resources/msg` (in a wheel, or the source tree's
    msg/ through a link), else `share/ros_seg/msg` of a ROS 2 install on AMENT_PREFIX_PATH."""
    packaged = Path(__file__).resolve().parents[1] / "resources" / "msg"
    candidates = [packaged] + [
        Path(prefix) / "share" / "ros_seg" / "msg"
        for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)
        if prefix
    ]
    for folder in candidates:
        if (folder / "SegmentArray.msg").is_file():
            return folder
    raise FileNotFoundError(
        f"cannot find ros_seg's message definitions (SegmentArray.msg) in {packaged} or in share/ros_seg/msg "
        "of AMENT_PREFIX_PATH: reinstall ros_seg (pip install .) or source its ROS 2 install"
    )


@functools.lru_cache(maxsize=1)
def replay_typestore() -> Typestore:
    """The ROS 2 Humble typestore with ros_seg/msg/{Segment,SegmentArray,SegmentationInfo} registered."""
    store = get_typestore(Stores.ROS2_HUMBLE)
    folder = message_dir()
    types = {}
    for name in _OWN_MESSAGES:
        types.update(get_types_from_msg((folder / f"{name}.msg").read_text(), f"ros_seg/msg/{name}"))
    store.register(types)
    return store


# Encodings of label images: encoding -> numpy dtype (one channel).
LABEL_ENCODINGS = {"mono8": np.dtype(np.uint8), "mono16": np.dtype(np.uint16), "32SC1": np.dtype(np.int32)}
# CompressedImage formats the writer produces: format -> OpenCV file extension.
COMPRESSED_FORMATS = {"jpeg": ".jpg", "png": ".png"}
# Channels of a decoded compressed image -> its encoding (OpenCV decodes to BGR order).
_DECODED_ENCODINGS = {1: "mono8", 3: "bgr8", 4: "bgra8"}
_NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class GroundTruth:
    """Ground truth of one frame, as scored.

    Args:
        semantic: (H, W) uint8 train ids, 255 unlabeled.
        panoptic: (H, W) int32 segment ids, 0 void.
        segments: segment id -> train id, for every id of `panoptic` but 0.
        crowd: ids of crowd segments (never matched, not false negatives).
    """

    semantic: np.ndarray
    panoptic: np.ndarray
    segments: dict[int, int]
    crowd: tuple[int, ...]


def stamp_ns(header: Any) -> int:
    """A std_msgs/Header's stamp in nanoseconds."""
    return int(header.stamp.sec) * _NS_PER_S + int(header.stamp.nanosec)


def header(stamp: int, frame_id: str) -> Any:
    """std_msgs/Header with a stamp given in nanoseconds."""
    types = replay_typestore().types
    time = types["builtin_interfaces/msg/Time"](sec=stamp // _NS_PER_S, nanosec=stamp % _NS_PER_S)
    return types["std_msgs/msg/Header"](stamp=time, frame_id=frame_id)


def image_message(pixels: np.ndarray, encoding: str, stamp: int, frame_id: str) -> Any:
    """sensor_msgs/Image of (H, W) or (H, W, C) pixels: rgb8 / bgr8 / mono8 uint8, mono16, or 32SC1 int32."""
    channels = pixels.shape[2] if pixels.ndim == 3 else 1
    expected = LABEL_ENCODINGS.get(encoding, np.dtype(np.uint8))
    if encoding not in LABEL_ENCODINGS and encoding not in ENCODINGS:
        raise ValueError(f"cannot write images in encoding {encoding!r}")
    if pixels.dtype != expected or channels != (ENCODINGS[encoding][0] if encoding in ENCODINGS else 1):
        raise ValueError(f"{encoding} image needs {expected} pixels, got {pixels.dtype} of shape {pixels.shape}")
    height, width = pixels.shape[:2]
    data = np.ascontiguousarray(pixels).reshape(-1).view(np.uint8)
    return replay_typestore().types[IMAGE](
        header=header(stamp, frame_id), height=height, width=width, encoding=encoding,
        is_bigendian=int(pixels.dtype.itemsize > 1 and sys.byteorder == "big"),
        step=width * channels * pixels.dtype.itemsize, data=data,
    )


def compressed_image_message(rgb: np.ndarray, image_format: str, stamp: int, frame_id: str) -> Any:
    """sensor_msgs/CompressedImage of an (H, W, 3) RGB image, "jpeg" or "png", format string as image_transport's."""
    if image_format not in COMPRESSED_FORMATS:
        raise ValueError(f"unknown compressed format {image_format!r}: use one of {', '.join(COMPRESSED_FORMATS)}")
    ok, encoded = cv2.imencode(COMPRESSED_FORMATS[image_format], cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"OpenCV could not encode a {rgb.shape} image as {image_format}")
    return replay_typestore().types[COMPRESSED_IMAGE](
        header=header(stamp, frame_id), format=f"rgb8; {image_format} compressed bgr8", data=encoded.reshape(-1)
    )


def camera_info_message(height: int, width: int, stamp: int, frame_id: str) -> Any:
    """sensor_msgs/CameraInfo of a nominal distortion-free pinhole: focal length = image width, centred."""
    types = replay_typestore().types
    f, cx, cy = float(width), (width - 1) / 2.0, (height - 1) / 2.0
    return types[CAMERA_INFO](
        header=header(stamp, frame_id), height=height, width=width, distortion_model="plumb_bob",
        d=np.zeros(5), k=np.array([f, 0, cx, 0, f, cy, 0, 0, 1.0]), r=np.eye(3).reshape(-1),
        p=np.array([f, 0, cx, 0, 0, f, cy, 0, 0, 0, 1.0, 0]), binning_x=0, binning_y=0,
        roi=types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
    )


def segment_array_message(truth: GroundTruth, metadata: ClassMetadata, stamp: int, frame_id: str) -> Any:
    """ros_seg/SegmentArray of a ground-truth panoptic map: area, box and centroid per segment, score 1."""
    types = replay_typestore().types
    ids = np.array(sorted(truth.segments), dtype=np.int64)
    height, width = truth.panoptic.shape
    index = np.minimum(np.searchsorted(ids, truth.panoptic), len(ids))  # (H, W) position of each pixel's id
    labels = np.where(np.append(ids, -1)[index] == truth.panoptic, index + 1, 0)  # (H, W) k + 1 for ids[k], 0 void
    areas = np.bincount(labels.ravel(), minlength=len(ids) + 1)[1:]
    rows, cols = np.indices(labels.shape)
    sum_x = np.bincount(labels.ravel(), weights=cols.ravel(), minlength=len(ids) + 1)[1:]
    sum_y = np.bincount(labels.ravel(), weights=rows.ravel(), minlength=len(ids) + 1)[1:]
    boxes = ndimage.find_objects(labels, max_label=len(ids))
    segments = []
    for k, seg_id in enumerate(ids.tolist()):
        if areas[k] == 0:
            continue
        cls = truth.segments[seg_id]
        box_rows, box_cols = boxes[k]
        segments.append(types["ros_seg/msg/Segment"](
            id=seg_id, class_id=cls, class_name=metadata.names[cls], is_thing=metadata.is_thing[cls], score=1.0,
            area=int(areas[k]), bbox_x=box_cols.start, bbox_y=box_rows.start,
            bbox_width=box_cols.stop - box_cols.start, bbox_height=box_rows.stop - box_rows.start,
            centroid_x=float(sum_x[k] / areas[k]), centroid_y=float(sum_y[k] / areas[k]),
        ))
    return types[SEGMENT_ARRAY](header=header(stamp, frame_id), height=height, width=width, segments=segments)


def image_array(msg: Any) -> tuple[np.ndarray, str]:
    """A deserialized Image or CompressedImage as an array and its encoding.

    Camera encodings (rgb8, bgr8, rgba8, bgra8, mono8) give an (H, W, C) uint8
    view; label encodings (mono16, 32SC1) an (H, W) view; a CompressedImage is
    decoded to bgr8 / bgra8 / mono8. ValueError says what is wrong with a bad message.
    """
    if msg.__msgtype__ == COMPRESSED_IMAGE:
        decoded = cv2.imdecode(np.asarray(msg.data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        if decoded is None or decoded.dtype != np.uint8:
            raise ValueError(f"compressed image ({msg.format!r}, {len(msg.data)} bytes) cannot be decoded to 8 bits")
        if decoded.ndim == 2:
            decoded = decoded[:, :, None]
        return decoded, _DECODED_ENCODINGS[decoded.shape[2]]
    encoding = msg.encoding
    if encoding in ENCODINGS:
        dtype, channels = np.dtype(np.uint8), ENCODINGS[encoding][0]
    elif encoding in LABEL_ENCODINGS:
        dtype, channels = LABEL_ENCODINGS[encoding], 1
    else:
        raise ValueError(f"image encoding {encoding!r} is not supported: use one of "
                         f"{', '.join([*ENCODINGS, *LABEL_ENCODINGS])}")
    row_bytes = msg.width * channels * dtype.itemsize
    if msg.height == 0 or msg.width == 0 or msg.step < row_bytes or len(msg.data) != msg.step * msg.height:
        raise ValueError(f"malformed {encoding} image: {msg.width}x{msg.height}, step {msg.step}, "
                         f"{len(msg.data)} bytes of data")
    rows = np.asarray(msg.data, dtype=np.uint8).reshape(msg.height, msg.step)[:, :row_bytes]  # (H, row bytes)
    pixels = rows.view(dtype.newbyteorder(">" if msg.is_bigendian else "<")) if dtype.itemsize > 1 else rows
    if encoding in LABEL_ENCODINGS:
        return pixels.astype(dtype, copy=False), encoding
    return pixels.reshape(msg.height, msg.width, channels), encoding


def segment_classes(msg: Any) -> dict[int, int]:
    """Segment id -> class id of a deserialized ros_seg/SegmentArray."""
    return {int(s.id): int(s.class_id) for s in msg.segments}


def crowd_ids(segments: dict[int, int], metadata: ClassMetadata) -> tuple[int, ...]:
    """Ground-truth crowd segments: thing-class ids below the Cityscapes instance offset (1000)."""
    return tuple(i for i, c in segments.items() if metadata.is_thing[c] and i < INSTANCE_OFFSET)
