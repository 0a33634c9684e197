"""Header checks of camera frames (ros_seg.ros.frame_limits): sizes read from PNG and JPEG headers as the
decoders see them, and damaged headers refused before OpenCV reads them. No DDS: the node's use of these checks
is tested over DDS in test_node_hostile_input.py."""
from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image

from ros_seg.inference.image_input import ImageError
from ros_seg.ros.frame_limits import check_frame

from test_node_hostile_input import png_chunk, png_of_zeros, with_jpeg_size  # isort: skip

PIXELS = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)


def compressed(data: bytes) -> CompressedImage:
    return CompressedImage(format="test", data=data)


def fault_of(msg: Image | CompressedImage, max_pixels: int = 37 * 53) -> str | None:
    try:
        check_frame(msg, max_pixels)
    except ImageError as exc:
        return exc.fault
    return None


@pytest.mark.parametrize("extension, flags", [(".png", []), (".jpg", []),
                                              (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])],
                         ids=["png", "baseline_jpeg", "progressive_jpeg"])
def test_header_size_is_the_decoded_size(extension: str, flags: list[int]) -> None:
    data = cv2.imencode(extension, PIXELS, flags)[1].tobytes()
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED).shape[:2] == (37, 53)
    assert fault_of(compressed(data)) is None  # exactly the budget
    assert fault_of(compressed(data), 37 * 53 - 1) == "too_large"


def test_jpeg_size_skips_an_exif_thumbnail_and_fill_bytes() -> None:
    """The frame header of a thumbnail inside APP1 is not the image's; fill bytes (0xFF) may precede markers."""
    image = cv2.imencode(".jpg", PIXELS)[1].tobytes()
    thumbnail = with_jpeg_size(cv2.imencode(".jpg", PIXELS[:8, :8])[1].tobytes(), 8, 8)
    app1 = b"Exif\x00\x00" + thumbnail
    data = image[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + b"\xff\xff" + image[2:]
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED).shape[:2] == (37, 53)
    assert fault_of(compressed(data)) is None
    assert fault_of(compressed(data), 37 * 53 - 1) == "too_large"


def test_png_chunk_longer_than_the_data_is_refused() -> None:
    """Found by the node's fuzz test: OpenCV allocated the 2 GB a damaged IDAT length declared (72-byte file)."""
    png = cv2.imencode(".png", PIXELS)[1].tobytes()
    damaged = png[:33] + struct.pack(">I", 0x77A6036B) + png[37:72]
    assert fault_of(compressed(damaged)) == "corrupt"
    assert fault_of(compressed(png[:-5])) == "corrupt"  # cut inside IEND
    many_chunks = png[:33] + b"".join(png_chunk(b"tEXt", b"k\x00v") for _ in range(1000)) + png[33:]
    assert fault_of(compressed(many_chunks)) is None


@pytest.mark.parametrize("data, fault", [
    (b"", "empty"),
    (b"GIF89a" + bytes(20), "format"),
    (b"\x89PNG\r\n\x1a\n" + bytes(30), "corrupt"),
    (png_of_zeros(4, 3, bit_depth=16, bytes_per_pixel=2), "format"),
    (png_of_zeros(4, 0), "empty"),
    (b"\xff\xd8\xff\xd9", "corrupt"),  # start and end of image, no frame
    (b"\xff\xd8" + b"\xff" * 10_000, "corrupt"),  # fill bytes only: read up to the segment limit
], ids=["no_data", "gif", "png_without_ihdr", "png_16_bit", "png_empty", "jpeg_without_frame", "jpeg_fill_only"])
def test_bad_compressed_headers(data: bytes, fault: str) -> None:
    assert fault_of(compressed(data)) == fault


def test_raw_checks_come_in_the_documented_order() -> None:
    """encoding, then empty, then the budget, then the layout (step and data length)."""
    def raw(encoding: str, height: int, width: int, step: int, size: int) -> Image:
        return Image(height=height, width=width, encoding=encoding, step=step, data=bytes(size))

    assert fault_of(raw("16UC1", 0, 0, 0, 1)) == "encoding"
    assert fault_of(raw("rgb8", 0, 1 << 31, 0, 1)) == "empty"
    assert fault_of(raw("rgb8", 1 << 31, 1 << 31, 0, 1)) == "too_large"
    assert fault_of(raw("rgb8", 37, 53, 3 * 53 - 1, 1)) == "layout"
    assert fault_of(raw("rgb8", 37, 53, 3 * 53, 3 * 53 * 37 + 1)) == "layout"
    assert fault_of(raw("rgb8", 37, 53, 3 * 53 + 7, (3 * 53 + 7) * 37)) is None
    msg = raw("x" * (1 << 20), 1, 1, 3, 3)
    with pytest.raises(ImageError) as error:
        check_frame(msg, 100)
    assert len(str(error.value)) < 200  # the 1 MiB encoding is quoted as a short excerpt
