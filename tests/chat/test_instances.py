"""Failures with real processes: reconnects while messages flow, a `kill -9` of an instance,
Redis restarted mid-conversation, a slow consumer."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import struct
import time

import pytest

from common.redis_server import RedisProcess
from tests.chat.conftest import Start
from tests.chat.factories import Client, auth, http_get, room, user

pytestmark = pytest.mark.slow
FAST_SEND = {"CHAT_SEND_RATE_PER_SECOND": "100000", "CHAT_SEND_BURST": "100000"}


async def test_reconnects_with_after_seq_lose_nothing_while_messages_flow(
    chat: Start, redis_url: str
) -> None:
    a, b = chat(redis_url, **FAST_SEND), chat(redis_url, **FAST_SEND)
    _, ta = user(a.url)
    bob, tb = user(a.url)
    r = room(a.url, ta, members=[bob])["id"]
    senders = [await Client.open(a.url, ta), await Client.open(b.url, ta)]
    for s in senders:
        await s.join(r)
    total = 300
    acked: list[dict] = []

    async def flow(s: Client, start: int) -> None:
        for i in range(start, total, 2):
            acked.append(await s.say(r, f"n{i}"))
            await asyncio.sleep(0.003)

    flowing = asyncio.gather(flow(senders[0], 0), flow(senders[1], 1))
    received: list[int] = []
    instances = [a.url, b.url]
    hop = 0
    while not flowing.done() or (received and received[-1] < total):
        c = await Client.open(instances[hop % 2], tb)
        after = received[-1] if received else 0
        await c.send(type="join", room=r, after_seq=after)
        await asyncio.sleep(0.15)  # messages keep flowing; then the connection drops
        await c.ws.close()
        await asyncio.sleep(0.05)
        received += c.seqs(r)
        hop += 1
        if flowing.done() and len(acked) == total and received and received[-1] == total:
            break
        if hop > 200:
            break
    await flowing
    assert received == list(range(1, total + 1))  # every message once, in order
    assert sorted(x["seq"] for x in acked) == list(range(1, total + 1))
    for s in senders:
        await s.close()


async def test_kill_9_takes_only_its_connections_and_their_presence_expires(
    chat: Start, redis_url: str
) -> None:
    a, b = chat(redis_url), chat(redis_url)
    alice, ta = user(a.url)
    bob, tb = user(a.url)
    r = room(a.url, ta)["id"]
    ca, cb = await Client.open(a.url, ta), await Client.open(b.url, tb)
    await ca.join(r)
    await cb.join(r)
    await ca.wait(lambda f: f["type"] == "presence" and f["users"] == sorted([alice, bob]))
    n = len(ca.frames)
    b.stop(signal.SIGKILL)
    # Its entries are not refreshed: within the TTL (1.5 s) plus a heartbeat, gone.
    await ca.wait(lambda f: f["type"] == "presence" and f["users"] == [alice], 5, start=n)
    url = f"{a.url}/api/rooms/{r}/presence"
    assert http_get(url, headers=auth(ta)).json()["users"] == [alice]
    await asyncio.wait_for(cb.ws.wait_closed(), 5)
    # The survivor keeps serving; Bob reconnects there and catches up.
    await ca.say(r, "still here")
    cb2 = await Client.open(a.url, tb)
    await cb2.join(r, after_seq=0)
    await cb2.wait_type("synced", room=r)
    assert [m["text"] for m in cb2.messages(r)] == ["still here"]
    for c in (ca, cb2):
        await c.close()


async def test_redis_restarted_mid_conversation(
    chat: Start, redis_factory: type[RedisProcess]
) -> None:
    redis = redis_factory()
    a, b = chat(redis.url), chat(redis.url)
    alice, ta = user(a.url)
    bob, tb = user(a.url)
    r = room(a.url, ta, members=[bob])["id"]
    ca, cb = await Client.open(a.url, ta), await Client.open(b.url, tb)
    await ca.join(r)
    await cb.join(r)
    acked = [await ca.say(r, f"before {i}") for i in range(5)]
    await cb.wait_seq(r, 5)
    redis.stop()
    # Sends still succeed (SQL is the record), on both instances.
    acked += [await ca.say(r, f"during {i}") for i in range(5)]
    acked.append(await cb.say(r, "bob during"))
    assert all(x["type"] == "ack" for x in acked), acked
    await asyncio.sleep(0.5)
    redis.start()
    # Each instance resubscribes by itself and fills what pub/sub missed from SQL.
    for c in (ca, cb):
        await c.wait_seq(r, 11, timeout=15)
    after = [await cb.say(r, f"after {i}") for i in range(3)]
    for c in (ca, cb):
        await c.wait_seq(r, 14)
        assert c.seqs(r) == list(range(1, 15)), c.seqs(r)
    acked += after
    hist = http_get(
        f"{a.url}/api/rooms/{r}/messages", params={"after_seq": 0}, headers=auth(ta)
    ).json()["messages"]
    assert [(m["id"], m["seq"]) for m in hist] == sorted((x["id"], x["seq"]) for x in acked)
    # Presence comes back too (refreshed by the heartbeat).
    await asyncio.sleep(1.0)
    users = http_get(f"{a.url}/api/rooms/{r}/presence", headers=auth(ta)).json()["users"]
    assert users == sorted([alice, bob])
    for c in (ca, cb):
        await c.close()


class StalledClient:
    """A WebSocket client on a raw socket that reads nothing until told to."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, token: str, first_frame: str) -> StalledClient:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=2**22)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET /ws?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
        payload, mask = first_frame.encode(), os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        writer.write(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
        await writer.drain()
        return cls(reader, writer)

    async def read_until_close(self) -> int | None:
        """Read frames until a close frame; its code (None if the socket just ended)."""
        while True:
            try:
                head = await self.reader.readexactly(2)
            except asyncio.IncompleteReadError:
                return None
            size = head[1] & 0x7F
            if size == 126:
                size = struct.unpack("!H", await self.reader.readexactly(2))[0]
            elif size == 127:
                size = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            payload = await self.reader.readexactly(size)
            if head[0] & 0x0F == 0x8:
                self.writer.close()
                return int(struct.unpack("!H", payload[:2])[0]) if payload else None


async def test_slow_consumer_is_closed_and_the_room_keeps_going(
    chat: Start, redis_url: str
) -> None:
    big = {
        **FAST_SEND,
        "CHAT_SEND_QUEUE_SIZE": "8",
        "CHAT_MAX_TEXT_CHARS": "60000",
        "CHAT_MAX_FRAME_BYTES": "65536",
    }
    a = chat(redis_url, **big)
    _, ta = user(a.url)
    _, tslow = user(a.url)
    r = room(a.url, ta)["id"]
    fast = await Client.open(a.url, ta)
    await fast.join(r)
    # A client that stops reading, with a small receive buffer: the server's socket fills.
    slow = await StalledClient.open(a.port, tslow, f'{{"type":"join","room":{r}}}')
    text = "x" * 50_000
    for i in range(300):
        await fast.send(type="send", room=r, text=text, client_id=f"b{i}")
    await fast.wait(lambda f: f["type"] == "ack" and f["client_id"] == "b299", timeout=30)
    await fast.wait_seq(r, 300, timeout=30)
    assert fast.seqs(r) == list(range(1, 301))
    # The slow one is closed (1013: try again later), not buffered without bound: reading
    # what was queued for it, it ends with the close frame.
    assert await asyncio.wait_for(slow.read_until_close(), 20) == 1013
    metrics = http_get(f"{a.url}/metrics").text
    assert "chat_slow_consumers_closed_total 1.0" in metrics
    await fast.close()


async def test_sending_faster_than_the_rate_gets_rate_limited(chat: Start, redis_url: str) -> None:
    # A slow rate, so a loaded machine's slower SQL cannot let the bucket refill meanwhile.
    a = chat(redis_url, CHAT_SEND_RATE_PER_SECOND="1", CHAT_SEND_BURST="5")
    _, ta = user(a.url)
    r = room(a.url, ta)["id"]
    c = await Client.open(a.url, ta)
    await c.join(r)
    started = time.monotonic()
    for i in range(20):
        await c.send(type="send", room=r, text=f"spam {i}", client_id=f"s{i}")
    await c.wait(lambda f: f["type"] in ("ack", "error") and f.get("client_id") == "s19")
    elapsed = time.monotonic() - started
    errors = [f for f in c.frames if f["type"] == "error"]
    acks = [f for f in c.frames if f["type"] == "ack"]
    assert errors and all(e["code"] == "rate_limited" and e["retry_after"] > 0 for e in errors)
    assert 5 <= len(acks) <= 5 + int(elapsed) + 1, (len(acks), elapsed)
    assert len(acks) + len(errors) == 20
    await c.send(type="ping")
    await c.wait_type("pong")
    await c.close()
