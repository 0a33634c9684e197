"""Refusing bad camera frames before anything is allocated for them.

The subscription callback checks every image message here, before the frame is
kept: a raw Image by its fields alone (encoding, size against the pixel budget,
row step and data length), a CompressedImage by the headers in its data (the
PNG IHDR chunk and the length of every chunk, or the JPEG segments up to the
frame header), so an 8192x8192 frame or a 261 KB PNG that would decode to
16384x16384 is refused in well under a millisecond, before any decode or copy.
Only 8-bit PNG and JPEG data is accepted on the compressed topic (what
image_transport's compressed plugin publishes). Error messages quote message
strings as short escaped excerpts.
"""
from __future__ import annotations

from sensor_msgs.msg import CompressedImage, Image

from ros_seg.inference.image_input import ENCODINGS, ImageError
from ros_seg.models.quoted_excerpt import excerpt

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8"  # start of image
# JPEG start-of-frame markers (baseline, extended, progressive, lossless, hierarchical, arithmetic):
# 0xC0-0xCF except DHT (0xC4), JPG (0xC8) and DAC (0xCC).
_JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7: no length field
JPEG_MAX_SEGMENTS = 256  # markers read while looking for the frame header (real files have a handful)


def check_pixel_budget(height: int, width: int, max_pixels: int, what: str) -> None:
    """ImageError (empty, too_large) unless 0 < `height` x `width` <= `max_pixels`."""
    if height == 0 or width == 0:
        raise ImageError(f"empty image: {what} has {width}x{height} pixels", "empty")
    if height * width > max_pixels:
        raise ImageError(
            f"{what} has {width}x{height} = {height * width} pixels, over the pixel budget of {max_pixels} "
            "(parameter max_image_pixels): refused before any copy or decode", "too_large")


def check_image_message(msg: Image, max_pixels: int) -> None:
    """Raise ImageError unless `msg` is an image the node can view without copying.

    In this order: the encoding is one the node segments (encoding); width and
    height are not 0 (empty); width x height is within `max_pixels` (too_large);
    the row step holds a row and the data is step x height bytes (layout).
    """
    encoding = msg.encoding
    if encoding not in ENCODINGS:
        raise ImageError(f"unsupported image encoding {excerpt(encoding)}: publish one of {', '.join(ENCODINGS)}",
                         "encoding")
    height, width, step = msg.height, msg.width, msg.step
    check_pixel_budget(height, width, max_pixels, f"{encoding} image")
    row_bytes = width * ENCODINGS[encoding][0]
    if step < row_bytes:
        raise ImageError(f"image step {step} is shorter than one {encoding} row of {width} pixels ({row_bytes} bytes)",
                         "layout")
    if len(msg.data) != step * height:
        raise ImageError(
            f"image data has {len(msg.data)} bytes but step x height = {step} x {height} = {step * height}", "layout")


def _big_endian(data: memoryview, start: int, size: int) -> int:
    return int.from_bytes(data[start:start + size], "big")


def png_size(data: memoryview) -> tuple[int, int]:
    """(height, width) from the IHDR chunk of PNG `data`, after checking that every chunk's declared length fits
    in the data (OpenCV's PNG reader allocates a chunk's declared length before reading it: a 72-byte file
    whose IDAT claims 2 GB made it allocate 2 GB); ImageError (corrupt, format) for a bad or 16-bit header."""
    if len(data) < 33 or bytes(data[12:16]) != b"IHDR":
        raise ImageError("cannot be decoded: its PNG data has no IHDR header chunk", "corrupt")
    bit_depth = data[24]
    if bit_depth > 8:
        raise ImageError(f"has {bit_depth}-bit PNG samples: publish 8-bit images", "format")
    position = 8
    while position < len(data):
        length = _big_endian(data, position, 4)
        kind = bytes(data[position + 4:position + 8])
        if position + 12 + length > len(data):
            raise ImageError(f"cannot be decoded: its PNG chunk {excerpt(kind)} at byte {position} declares "
                             f"{length} bytes, {len(data) - position} remain", "corrupt")
        if kind == b"IEND":
            break
        position += 12 + length
    return _big_endian(data, 20, 4), _big_endian(data, 16, 4)


def jpeg_size(data: memoryview) -> tuple[int, int]:
    """(height, width) from the frame header (SOFn) of JPEG `data`, read by walking the segments before it
    without looking into them (so a thumbnail in EXIF data is not taken for the image); ImageError (corrupt,
    format) when there is none, it is cut short, or its samples are not 8-bit."""
    position = 2
    for _ in range(JPEG_MAX_SEGMENTS):
        if position + 4 > len(data) or data[position] != 0xFF:
            break
        marker = data[position + 1]
        if marker == 0xFF:  # a fill byte
            position += 1
            continue
        if marker in _JPEG_STANDALONE_MARKERS:
            position += 2
            continue
        length = _big_endian(data, position + 2, 2)
        if marker in _JPEG_FRAME_MARKERS:
            if length < 8 or position + 2 + length > len(data):
                break
            precision = data[position + 4]
            if precision != 8:
                raise ImageError(f"has {precision}-bit JPEG samples: publish 8-bit images", "format")
            return _big_endian(data, position + 5, 2), _big_endian(data, position + 7, 2)
        if marker in (0xD9, 0xDA) or length < 2:  # end of image or start of scan before any frame header
            break
        position += 2 + length
    raise ImageError("cannot be decoded: its JPEG data has no readable frame header (SOF) before the image data",
                     "corrupt")


def check_compressed_message(msg: CompressedImage, max_pixels: int) -> None:
    """Raise ImageError unless `msg` holds 8-bit PNG or JPEG data whose header declares at most `max_pixels`.

    Only the header is read: the signature (format), then the size (corrupt,
    empty, too_large), and for PNG the length of every chunk (corrupt). Data
    that passes may still fail to decode.
    """
    what = f"compressed image ({excerpt(msg.format)}, {len(msg.data)} bytes)"
    data = memoryview(msg.data).cast("B")
    if len(data) == 0:
        raise ImageError(f"{what} has no data", "empty")
    if bytes(data[:8]) == PNG_SIGNATURE:
        read_size = png_size
    elif bytes(data[:2]) == JPEG_SIGNATURE:
        read_size = jpeg_size
    else:
        raise ImageError(f"{what} is neither PNG nor JPEG data: publish png or jpeg", "format")
    try:
        size = read_size(data)
    except ImageError as exc:
        raise ImageError(f"{what} {exc}", exc.fault) from None
    check_pixel_budget(*size, max_pixels, what)


def check_frame(msg: Image | CompressedImage, max_pixels: int) -> None:
    """Raise ImageError when the node must refuse `msg` unread (see check_image_message, check_compressed_message)."""
    if isinstance(msg, CompressedImage):
        check_compressed_message(msg, max_pixels)
    else:
        check_image_message(msg, max_pixels)
