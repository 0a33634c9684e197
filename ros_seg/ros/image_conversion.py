"""sensor_msgs Image / CompressedImage <-> numpy arrays, with the fewest copies rclpy allows.

Incoming images become numpy *views* of the message's data (no copy). Outgoing
label maps are copied once, into the `array.array('B')` the message keeps.
The generated message classes copy or iterate whatever else is assigned to
`data` (a bytes object is copied again; a numpy array or memoryview is
iterated element by element, ~0.3 s for a 2048x1024 rgb8 image, and so is
bytes when ROS_PYTHON_CHECK_FIELDS=1), so messages are built with
`check_fields=True`, whose setter keeps an `array.array('B')` as it is.
"""
from __future__ import annotations

import array
import sys

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from ros_seg.inference.image_input import ENCODINGS, ImageError
from ros_seg.models.quoted_excerpt import excerpt
from ros_seg.ros.frame_limits import check_compressed_message, check_image_message

# Encodings of the images the node publishes: encoding -> (dtype, channels).
OUTPUT_ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "mono8": (np.dtype(np.uint8), 1),
    "mono16": (np.dtype(np.uint16), 1),
    "32SC1": (np.dtype(np.int32), 1),
    "rgb8": (np.dtype(np.uint8), 3),
}

# Channels of a decoded compressed image -> its encoding (OpenCV decodes to BGR order).
_DECODED_ENCODINGS = {1: "mono8", 3: "bgr8", 4: "bgra8"}


def image_to_array(msg: Image, max_pixels: int) -> tuple[np.ndarray, str]:
    """A received Image as an (H, W, C) uint8 view of its data, and its encoding.

    Raises ImageError (frame_limits.check_image_message) naming what is wrong: an
    encoding the node cannot segment, a zero size, more than `max_pixels`
    pixels, a row step shorter than a row, or data of the wrong length.
    """
    check_image_message(msg, max_pixels)
    height, width, step = msg.height, msg.width, msg.step
    channels = ENCODINGS[msg.encoding][0]
    rows = np.frombuffer(msg.data, dtype=np.uint8).reshape(height, step)  # (H, step) view
    return rows[:, :width * channels].reshape(height, width, channels), msg.encoding


def compressed_to_array(msg: CompressedImage, max_pixels: int) -> tuple[np.ndarray, str]:
    """A received CompressedImage (8-bit PNG or JPEG) decoded to (H, W, C) uint8, and its encoding.

    The header is checked first (frame_limits.check_compressed_message: format,
    size within `max_pixels`); ImageError for that or for data OpenCV cannot decode.
    """
    check_compressed_message(msg, max_pixels)
    decoded = cv2.imdecode(np.frombuffer(msg.data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise ImageError(f"compressed image ({excerpt(msg.format)}, {len(msg.data)} bytes) cannot be decoded: "
                         "corrupt data", "corrupt")
    if decoded.dtype != np.uint8:
        raise ImageError(f"compressed image decodes to {decoded.dtype} pixels: publish 8-bit images", "format")
    if decoded.ndim == 2:
        decoded = decoded[:, :, None]
    return decoded, _DECODED_ENCODINGS[decoded.shape[2]]


def rgb_array(image: np.ndarray, encoding: str) -> np.ndarray:
    """(H, W, C) uint8 image in `encoding` -> (H, W, 3) RGB (the image itself for rgb8)."""
    if encoding == "rgb8":
        return image
    return image[:, :, list(ENCODINGS[encoding][1])]


def array_to_image(pixels: np.ndarray, encoding: str, header: Header) -> Image:
    """An Image message holding `pixels`, copied once.

    Args:
        pixels: (H, W) or (H, W, C) array whose dtype and channels match `encoding`.
        encoding: one of OUTPUT_ENCODINGS.
        header: header of the message (the source image's, unchanged).
    """
    dtype, channels = OUTPUT_ENCODINGS[encoding]
    pixel_channels = pixels.shape[2] if pixels.ndim == 3 else 1
    if pixels.dtype != dtype or pixels.ndim not in (2, 3) or pixel_channels != channels:
        raise ValueError(f"{encoding} needs {channels}-channel {dtype} pixels, got {pixels.dtype} {pixels.shape}")
    height, width = pixels.shape[:2]
    data = array.array("B")
    data.frombytes(np.ascontiguousarray(pixels).reshape(-1).view(np.uint8))  # the one copy
    msg = Image(check_fields=True)
    msg.header = header
    msg.height = height
    msg.width = width
    msg.encoding = encoding
    msg.is_bigendian = int(dtype.itemsize > 1 and sys.byteorder == "big")
    msg.step = width * channels * dtype.itemsize
    msg.data = data
    return msg
