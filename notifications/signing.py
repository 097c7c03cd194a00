"""Webhook signatures, Stripe's scheme: HMAC-SHA256 over `<timestamp>.<body>`, sent as
`Notifications-Signature: t=<unix seconds>,v1=<hex>`. The timestamp stops replays of an old
captured request; receivers call `verify` (and dedupe on `Notifications-Delivery-Id`).

    from notifications.signing import verify
    verify(secret, request.body, request.headers["Notifications-Signature"], tolerance=300)
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "Notifications-Signature"
DELIVERY_HEADER = "Notifications-Delivery-Id"


class SignatureError(ValueError):
    pass


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The header value for `body` signed now (or at `timestamp`)."""
    ts = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


def verify(
    secret: str, body: bytes, header: str, *, tolerance: float = 300, now: float | None = None
) -> None:
    """Raise SignatureError unless `header` signs `body` with `secret` within `tolerance` s."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        ts = int(parts["t"])
    except (KeyError, ValueError):
        raise SignatureError("no timestamp in the signature header") from None
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance:
        raise SignatureError("timestamp outside the tolerance (replayed or clock skew)")
    expected = sign(secret, body, ts).split("v1=", 1)[1]
    if not hmac.compare_digest(expected, parts.get("v1", "")):
        raise SignatureError("signature does not match")
