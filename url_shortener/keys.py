"""API keys: the admin key from settings, plus minted keys stored as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from datetime import UTC, datetime

from common.db import transaction
from url_shortener import store
from url_shortener.errors import Forbidden, LinkNotFound, Unauthorized
from url_shortener.store import ApiKey

TOUCH_EVERY = 60.0  # seconds between two writes of a key's last_used_at
ADMIN = "admin"  # the owner name of the admin key, which sees and manages every link


class KeyService:
    """API keys: the admin key from settings, plus minted keys stored as SHA-256 hashes.

    Keys are 32 random bytes, so a fast hash is enough (no brute force can reach them);
    only the hash and a short prefix (for telling keys apart) are stored.
    """

    def __init__(self, *, admin_key: str, sessions: store.Sessions) -> None:
        self.admin_key = admin_key
        self.sessions = sessions
        self._touched: dict[int, float] = {}  # key id -> when last_used_at was last written

    @staticmethod
    def _hash(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    async def authenticate(self, key: str | None) -> str:
        """The owner name for a key; raises Unauthorized."""
        if not key:
            raise Unauthorized("Send an API key in the X-API-Key header.")
        if hmac.compare_digest(key.encode(), self.admin_key.encode()):
            return ADMIN
        async with self.sessions() as session:
            row = await store.key_by_hash(session, self._hash(key))
        if row is None:
            raise Unauthorized("The API key is not valid.")
        await self._touch(row.id)
        return f"key:{row.id}"

    async def _touch(self, key_id: int) -> None:
        """Record when a key was used: one write a minute per key at most, not per request."""
        now = time.monotonic()
        if now - self._touched.get(key_id, -TOUCH_EVERY) < TOUCH_EVERY:
            return
        self._touched[key_id] = now
        async with transaction(self.sessions) as session:
            await store.touch_key(session, key_id)

    async def list(self, *, owner: str) -> list[ApiKey]:
        """The working minted keys (admin only): names, prefixes, dates; never a secret."""
        if owner != ADMIN:
            raise Forbidden("Only the admin key can list keys.")
        async with self.sessions() as session:
            return await store.active_keys(session)

    async def revoke(self, key_id: int, *, owner: str) -> None:
        """Revoke a minted key (admin only); it stops working at once."""
        if owner != ADMIN:
            raise Forbidden("Only the admin key can revoke keys.")
        async with transaction(self.sessions) as session:
            if not await store.revoke_key(session, key_id):
                raise LinkNotFound(f"No active key has the id {key_id}.")

    async def create(self, name: str, *, owner: str) -> tuple[ApiKey, str]:
        if owner != ADMIN:
            raise Forbidden("Only the admin key can mint keys.")
        key = "us_" + secrets.token_urlsafe(32)
        row = ApiKey(
            name=name, prefix=key[:10], key_hash=self._hash(key), created_at=datetime.now(UTC)
        )
        async with transaction(self.sessions) as session:
            session.add(row)
        return row, key
