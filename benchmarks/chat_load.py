"""WebSocket load for the chat benchmark and experiment: members joined to one room, a
sender at a steady rate, delivery latency measured on the receiving side (one clock: the
same process sends and receives). Also the bare `websockets` broadcast server that is the
ceiling, and the idle-connection holder that runs in its own process.

    python -m benchmarks.chat_load ceiling PORT          # serve the bare broadcast server
    python -m benchmarks.chat_load hold URL ROOM N       # hold N idle connections (tokens on stdin)
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, broadcast, serve


@dataclass
class Fanout:
    sent: int
    deliveries: int
    expected: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def per_second(self) -> float:
        return self.deliveries / self.seconds if self.seconds else 0.0


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def _open(url: str, *, chat: bool, token: str | None, room: int) -> ClientConnection:
    full = f"{url}?token={token}" if token else url
    ws = await connect(full, proxy=None, compression=None, max_queue=None, open_timeout=60)
    if chat:
        join = json.dumps({"type": "join", "room": room})
        await ws.send(join)
        while (kind := json.loads(await ws.recv()).get("type")) != "joined":
            if kind == "error":  # the server was too busy for this join: ask again
                await asyncio.sleep(0.5)
                await ws.send(join)
    return ws


async def fanout(
    urls: list[str],
    *,
    members: int,
    rate: float,
    seconds: float,
    chat: bool,
    tokens: list[str] | None = None,
    room: int = 0,
) -> Fanout:
    """`members` connections spread over `urls`; one more sends `rate` messages a second."""
    latencies: list[float] = []
    conns: list[ClientConnection] = []
    sem = asyncio.Semaphore(100)

    async def open_one(i: int) -> None:
        async with sem:
            token = tokens[i % len(tokens)] if tokens else None
            conns.append(await _open(urls[i % len(urls)], chat=chat, token=token, room=room))

    await asyncio.gather(*(open_one(i) for i in range(members)))
    last_rx = 0.0

    async def receive(ws: ClientConnection) -> None:
        nonlocal last_rx
        async for raw in ws:
            now = time.perf_counter()
            frame = json.loads(raw)
            if frame.get("type") != "message":
                continue
            sent_at = float(json.loads(frame["text"])["t"] if chat else frame["text"]["t"])
            latencies.append(now - sent_at)
            last_rx = now

    readers = [asyncio.create_task(receive(ws)) for ws in conns]
    await asyncio.sleep(1.0)  # presence frames of the joins settle
    latencies.clear()
    sender = await _open(urls[0], chat=chat, token=tokens[0] if tokens else None, room=room)
    total = int(rate * seconds)
    run = uuid.uuid4().hex[:8]  # client_ids unique per run: a repeated one is deduplicated
    drain = asyncio.create_task(drain_frames(sender))
    start = time.perf_counter()
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        payload: Any = {"t": time.perf_counter()}
        if chat:
            frame = {
                "type": "send",
                "room": room,
                "text": json.dumps(payload),
                "client_id": f"{run}-{i}",
            }
        else:
            frame = {"type": "message", "text": payload}
        await sender.send(json.dumps(frame))
    expected = total * members
    deadline = time.perf_counter() + 10
    while len(latencies) < expected and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    elapsed = (last_rx or time.perf_counter()) - start
    for task in [*readers, drain]:
        task.cancel()
    await asyncio.gather(sender.close(), *(ws.close() for ws in conns), return_exceptions=True)
    return Fanout(
        sent=total,
        deliveries=len(latencies),
        expected=expected,
        seconds=elapsed,
        p50_ms=_pct(latencies, 0.50) * 1000,
        p99_ms=_pct(latencies, 0.99) * 1000,
    )


async def drain_frames(ws: ClientConnection) -> None:
    """Read and drop what a sender is sent (its acks), so its socket never backs up."""
    async for _ in ws:
        pass


async def _ceiling(port: int) -> None:
    """A bare broadcast server: whatever one client sends goes to every client."""
    clients: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        clients.add(ws)
        try:
            async for message in ws:
                broadcast(clients, message)
        finally:
            clients.discard(ws)

    async with serve(handler, "127.0.0.1", port, compression=None, max_queue=None):
        print("ready", flush=True)
        await asyncio.Future()


async def _hold(url: str, room: int, count: int) -> None:
    """Hold `count` authenticated connections (tokens on stdin's first line, comma-separated)
    until stdin ends. They join no room: a room's presence frames would make them busy."""
    tokens = [line.strip() for line in sys.stdin.readline().split(",") if line.strip()]
    sem = asyncio.Semaphore(200)
    conns: list[ClientConnection] = []

    async def one(i: int) -> None:
        async with sem:
            conns.append(await _open(url, chat=False, token=tokens[i % len(tokens)], room=room))

    await asyncio.gather(*(one(i) for i in range(count)))
    print("ready", len(conns), flush=True)
    await asyncio.to_thread(sys.stdin.read)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "ceiling":
        asyncio.run(_ceiling(int(sys.argv[2])))
    elif mode == "hold":
        asyncio.run(_hold(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    else:
        raise SystemExit(f"unknown mode {mode}; websockets {websockets.__version__}")
