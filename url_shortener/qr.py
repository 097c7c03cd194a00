"""QR codes of short URLs, as SVG or PNG, exactly `size` pixels wide and high (quiet zone
included). segno (pure Python) makes the matrix; the PNG is drawn here, because segno's own
PNG writer only scales by whole pixels per module."""

from __future__ import annotations

import io
import struct
import zlib

import segno

MIN_SIZE, MAX_SIZE = 64, 2048
BORDER = 4  # modules of quiet zone, as the standard asks


def render(data: str, *, fmt: str, size: int) -> bytes:
    """A `size` x `size` image of the QR code of `data` (fmt: "svg" or "png")."""
    qr = segno.make(data, error="m", micro=False)
    if fmt == "svg":
        modules = qr.symbol_size(border=BORDER)[0]
        buf = io.BytesIO()
        qr.save(buf, kind="svg", scale=size / modules, border=BORDER)
        return buf.getvalue()
    return _png([list(row) for row in qr.matrix_iter(border=BORDER)], size)


def _png(matrix: list[list[int]], size: int) -> bytes:
    """An 8-bit grayscale PNG; each pixel takes the module under it (nearest neighbour, so
    modules differ by at most one pixel when `size` is not a multiple of their count)."""
    n = len(matrix)
    columns = [x * n // size for x in range(size)]
    # One pixel row per module row (filter byte 0 first), repeated down its pixel rows.
    lines = [b"\x00" + bytes(0 if row[c] else 255 for c in columns) for row in matrix]
    raw = zlib.compress(b"".join(lines[y * n // size] for y in range(size)), 6)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", size, size, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")
