"""QR codes of short URLs, as SVG or PNG (segno: pure Python, no imaging library)."""

from __future__ import annotations

import io

import segno

MIN_SIZE, MAX_SIZE = 64, 2048


def render(data: str, *, fmt: str, size: int) -> bytes:
    """A QR code about `size` pixels wide (quiet zone included)."""
    qr = segno.make(data, error="m", micro=False)
    modules = qr.symbol_size(border=4)[0]
    scale = max(1, size // modules)
    buf = io.BytesIO()
    qr.save(buf, kind=fmt, scale=scale, border=4)
    return buf.getvalue()
