"""A small deterministic PNG per seed, built by hand so the emulator needs nothing beyond the stdlib."""

import functools
import hashlib
import struct
import zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


@functools.lru_cache(maxsize=256)
def gradient_png(seed: str, size: int = 64) -> bytes:
    """An RGB gradient whose colours come from sha256(seed): the same seed always gives the same bytes."""
    red, green, blue = hashlib.sha256(seed.encode()).digest()[:3]
    rows = bytearray()
    for y in range(size):
        rows.append(0)  # filter type "none" for this scanline
        for x in range(size):
            rows += bytes(((red + 4 * x) % 256, (green + 4 * y) % 256, (blue + 2 * (x + y)) % 256))
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(bytes(rows)))
        + _chunk(b"IEND", b"")
    )
