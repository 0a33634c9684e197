"""CRC-32 checksums of the chunks of an mcap file, which rosbags' writer leaves at 0 ("not computed").

MCAP stores each chunk's CRC-32 of its uncompressed records in the chunk record
(https://mcap.dev/spec#chunk-op0x06); readers, rosbags' included, check it when it
is not 0, so a bag with the CRCs filled in reports flipped bytes in its messages
("Chunk checksum mismatch") instead of replaying them. `write_chunk_crcs` fills
them into a finished file in place.
"""
from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

MAGIC = b"\x89MCAP0\r\n"
_CHUNK = 0x06
_DATA_END = 0x0F
_CRC_OFFSET = 24  # in a chunk record's body: message start time, end time, uncompressed size (uint64 each), CRC


def write_chunk_crcs(path: str | Path) -> int:
    """Write the CRC-32 of every uncompressed chunk of the mcap file `path` into it; returns how many.

    Chunks compressed by the writer keep their CRC (ros_seg writes uncompressed
    chunks). Raises ValueError when `path` is no mcap file.
    """
    count = 0
    with open(path, "r+b") as f:
        if f.read(len(MAGIC)) != MAGIC:
            raise ValueError(f"{path} is not an mcap file (no mcap magic)")
        while True:
            header = f.read(9)
            if len(header) < 9:
                break
            opcode, length = struct.unpack("<BQ", header)
            start = f.tell()
            if opcode == _DATA_END:
                break
            if opcode == _CHUNK:
                body = f.read(length)
                (name_length,) = struct.unpack_from("<I", body, _CRC_OFFSET + 4)
                records_at = _CRC_OFFSET + 8 + name_length
                compression = body[_CRC_OFFSET + 8:records_at]
                (records_length,) = struct.unpack_from("<Q", body, records_at)
                if compression == b"":
                    records = body[records_at + 8:records_at + 8 + records_length]
                    f.seek(start + _CRC_OFFSET)
                    f.write(struct.pack("<I", zlib.crc32(records)))
                    count += 1
            f.seek(start + length)
        f.flush()
        os.fsync(f.fileno())
    return count
