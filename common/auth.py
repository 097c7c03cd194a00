"""Accounts' two primitives, shared by every service that has users: signed access tokens
(JWT, HS256) and a memory-hard password hash (scrypt).

    tokens = TokenIssuer(secret=settings.jwt_secret, ttl=3600)
    token, expires_in = tokens.issue("42", name="alice")
    claims = tokens.verify(token)          # raises InvalidToken (bad, expired, wrong key)

    stored = await hash_password_async("hunter22")
    ok = await verify_password_async("hunter22", stored)

The secret is checked by the service's settings (`ServiceSettings.require_secret`): a
placeholder refuses to start in production, so tokens are never signed with a known key.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import time
from typing import Any

import jwt

# scrypt cost: N=2^14, r=8 needs 16 MiB per hash (what makes GPU guessing expensive) and
# ~50 ms of one core; hashlib releases the GIL, the async wrappers run it in a thread.
_N, _R, _P, _DKLEN = 2**14, 8, 1, 32
_ALGORITHM = "HS256"


class InvalidToken(Exception):
    """The token is malformed, signed with another key, or expired."""


class TokenIssuer:
    """Issues and verifies HS256 JWTs: `sub` is the subject, `exp`/`iat` set from `ttl`."""

    def __init__(self, *, secret: str, ttl: int = 3600, issuer: str | None = None) -> None:
        if not secret:
            raise ValueError("a token secret is required")
        self._secret = secret
        self.ttl = ttl
        self.issuer = issuer

    def issue(self, subject: str, *, ttl: int | None = None, **claims: Any) -> tuple[str, int]:
        """A signed token for `subject` and the seconds it stays valid."""
        lifetime = self.ttl if ttl is None else ttl
        now = int(time.time())
        payload: dict[str, Any] = {**claims, "sub": subject, "iat": now, "exp": now + lifetime}
        if self.issuer:
            payload["iss"] = self.issuer
        return jwt.encode(payload, self._secret, algorithm=_ALGORITHM), lifetime

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims; `InvalidToken` unless it is ours, intact and unexpired."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._secret,
                algorithms=[_ALGORITHM],  # never "none", never whatever the header says
                issuer=self.issuer,
                options={"require": ["sub", "exp", "iat"]},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc)) from exc
        return claims


def hash_password(password: str) -> str:
    """`scrypt$<salt>$<digest>` (base64), with a fresh random salt."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=_DKLEN)
    return f"scrypt${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` matches `stored`, compared in constant time."""
    try:
        scheme, salt_b64, digest_b64 = stored.split("$")
        salt, digest = base64.b64decode(salt_b64), base64.b64decode(digest_b64)
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    candidate = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=len(digest))
    return hmac.compare_digest(candidate, digest)


async def hash_password_async(password: str) -> str:
    return await asyncio.to_thread(hash_password, password)


async def verify_password_async(password: str, stored: str) -> bool:
    return await asyncio.to_thread(verify_password, password, stored)
