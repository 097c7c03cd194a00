"""Test data and a small WebSocket client over the real protocol."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from tests.chat.conftest import unique

PASSWORD = "correct horse battery"


def user(base: str, name: str | None = None) -> tuple[str, str]:
    """Register a user; (username, access token)."""
    name = name or unique()
    resp = httpx.post(f"{base}/api/users", json={"username": name, "password": PASSWORD})
    assert resp.status_code == 201, resp.text
    resp = httpx.post(f"{base}/api/token", json={"username": name, "password": PASSWORD})
    assert resp.status_code == 200, resp.text
    return name, resp.json()["access_token"]


def http_get(url: str, **kwargs: Any) -> httpx.Response:
    """A blocking GET (tests call it between awaits; the server runs in another process)."""
    return httpx.get(url, **kwargs)


def auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def room(base: str, token: str, **fields: Any) -> dict[str, Any]:
    body = {"name": unique("room"), **fields}
    resp = httpx.post(f"{base}/api/rooms", json=body, headers=auth(token))
    assert resp.status_code == 201, resp.text
    return resp.json()


def ws_url(base: str) -> str:
    return base.replace("http://", "ws://") + "/ws"


class Client:
    """One WebSocket connection: frames it received, kept in order, and helpers to wait."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self._new = asyncio.Event()
        self.closed: tuple[int | None, str] | None = None
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, base: str, token: str, *, via: str = "query") -> Client:
        if via == "query":
            ws = await connect(f"{ws_url(base)}?token={token}", max_size=2**22, proxy=None)
        else:
            protocols = [Subprotocol("chat"), Subprotocol(token)]
            ws = await connect(ws_url(base), subprotocols=protocols, max_size=2**22, proxy=None)
        return cls(ws)

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                self.frames.append(json.loads(raw))
                self._new.set()
        except Exception:
            pass
        finally:
            rcvd = self.ws.protocol.close_rcvd
            self.closed = (rcvd.code, rcvd.reason) if rcvd else (None, "")
            self._new.set()

    async def send(self, **frame: Any) -> None:
        await self.ws.send(json.dumps(frame))

    async def wait(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float = 10.0, start: int = 0
    ) -> dict:
        """The first frame from index `start` on matching `pred` (waiting for it)."""
        deadline = time.monotonic() + timeout
        seen = start
        while True:
            for frame in self.frames[seen:]:
                if pred(frame):
                    return frame
            seen = len(self.frames)
            if self.closed is not None:
                raise AssertionError(f"closed {self.closed} before a match; got {self.frames}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"no matching frame within {timeout}s; got {self.frames[-20:]}"
                )
            self._new.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new.wait(), left)

    async def wait_type(self, type_: str, timeout: float = 10.0, **fields: Any) -> dict:
        return await self.wait(
            lambda f: f.get("type") == type_ and all(f.get(k) == v for k, v in fields.items()),
            timeout,
        )

    async def join(self, room_id: int, **extra: Any) -> dict:
        await self.send(type="join", room=room_id, **extra)
        return await self.wait_type("joined", room=room_id)

    async def say(self, room_id: int, text: str, client_id: str | None = None) -> dict:
        cid = client_id or unique("c")
        start = len(self.frames)
        await self.send(type="send", room=room_id, text=text, client_id=cid)
        return await self.wait(
            lambda f: f.get("client_id") == cid and f["type"] in ("ack", "error"), start=start
        )

    def messages(self, room_id: int) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("type") == "message" and f["room"] == room_id]

    def seqs(self, room_id: int) -> list[int]:
        return [f["seq"] for f in self.messages(room_id)]

    async def wait_seq(self, room_id: int, seq: int, timeout: float = 10.0) -> None:
        await self.wait(
            lambda f: f.get("type") == "message" and f["room"] == room_id and f["seq"] >= seq,
            timeout,
        )

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
