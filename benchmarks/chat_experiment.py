"""make experiment-chat: what sync buys, and what room size costs.

(a) A sender keeps sending while a reader is forcibly disconnected every 0.2 s and
reconnects, alternating between two instances: once rejoining with `after_seq` (the last
seq it saw), once with a plain `join` (live only, as a pub/sub-only chat would). Messages
lost and duplicated, in a table.
(b) Delivery latency p50/p99 against room size (10 to 1,000 members) on one and on two
instances, as a table and a chart (chat/experiment.png, which the README shows).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
from contextlib import ExitStack
from pathlib import Path

from websockets.asyncio.client import connect

from benchmarks.chat import SECRET, _seed
from benchmarks.chat_load import drain_frames, fanout
from common.processes import ROOT, ServiceProcess
from common.redis_server import RedisProcess


async def _reconnects(urls: list[str], tokens: list[str], room: int, *, resync: bool,
                      messages: int) -> tuple[int, int]:  # fmt: skip
    """(lost, duplicated) for one reader that keeps being disconnected."""
    sender = await connect(f"{urls[0]}?token={tokens[0]}", proxy=None)
    await sender.send(json.dumps({"type": "join", "room": room}))
    base = 0
    while True:
        frame = json.loads(await sender.recv())
        if frame["type"] == "joined":
            base = frame["seq"]
            break

    async def send_all() -> None:
        for i in range(messages):
            frame = {"type": "send", "room": room, "text": f"m{i}", "client_id": f"{resync}-{i}"}
            await sender.send(json.dumps(frame))
            await asyncio.sleep(0.005)

    seen: list[int] = []
    drain = asyncio.create_task(drain_frames(sender))
    task = asyncio.create_task(send_all())

    async def visit(url: str, seconds: float) -> None:
        """One connection: join (with after_seq or not), read for `seconds`, drop."""
        ws = await connect(f"{url}?token={tokens[1]}", proxy=None)
        join: dict[str, object] = {"type": "join", "room": room}
        if resync:
            join["after_seq"] = seen[-1] if seen else base
        await ws.send(json.dumps(join))
        try:
            async with asyncio.timeout(seconds):
                async for raw in ws:
                    frame = json.loads(raw)
                    if frame["type"] == "message" and frame["seq"] > base:
                        seen.append(frame["seq"])
        except TimeoutError:
            pass
        await ws.close()

    hop = 0
    while not task.done():
        await visit(urls[hop % len(urls)], 0.2)
        hop += 1
    await task
    await asyncio.sleep(0.5)  # the last sends are stored and fanned out
    await visit(urls[hop % len(urls)], 1.0)  # one last reconnect, after the flow stopped
    drain.cancel()
    await sender.close()
    expected = set(range(base + 1, base + messages + 1))
    lost = len(expected - set(seen))
    return lost, len(seen) - len(set(seen))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--sizes", default="10,100,300,1000")
    parser.add_argument("--rate", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        redis_url = os.environ.get("REDIS_URL") or stack.enter_context(RedisProcess()).url
        db = f"sqlite:///{Path(tmp) / 'chat.db'}"
        tokens, room = asyncio.run(_seed(db, max(sizes)))
        env = {
            "CHAT_REDIS_URL": redis_url, "CHAT_DATABASE_URL": db, "CHAT_DATA_DIR": tmp,
            "CHAT_JWT_SECRET": SECRET, "CHAT_ACCESS_LOG": "false", "CHAT_LOG_LEVEL": "WARNING",
            "CHAT_SEND_RATE_PER_SECOND": "100000", "CHAT_SEND_BURST": "100000",
            "CHAT_DELIVERY_RECEIPTS": "false",
        }  # fmt: skip
        instances = [
            ServiceProcess("chat", env, log_path=Path(tmp) / f"chat-{i}.log") for i in range(2)
        ]
        for inst in instances:
            stack.callback(inst.stop)
            inst.start(timeout=30)
        urls = [inst.url.replace("http://", "ws://") + "/ws" for inst in instances]

        print("(a) a reader disconnected every 0.2 s while messages flow "
              f"({args.messages} messages, two instances)")  # fmt: skip
        print(f"{'reconnect with':28s}{'lost':>8s}{'duplicated':>12s}")
        for resync, label in ((False, "join (live only)"), (True, "join {after_seq}")):
            lost, dup = asyncio.run(
                _reconnects(urls, tokens, room, resync=resync, messages=args.messages)
            )
            print(f"{label:28s}{lost:8d}{dup:12d}", flush=True)

        print()
        print(f"(b) delivery latency against room size ({args.rate:g} msg/s, {args.seconds:g} s)")
        print(f"{'members':>8s}{'instances':>10s}{'p50 ms':>10s}{'p99 ms':>10s}{'delivered':>12s}")
        rows: list[tuple[int, int, float, float]] = []
        for size in sizes:
            for count in (1, 2):
                res = asyncio.run(fanout(urls[:count], members=size, rate=args.rate,
                                         seconds=args.seconds, chat=True, tokens=tokens,
                                         room=room))  # fmt: skip
                rows.append((size, count, res.p50_ms, res.p99_ms))
                print(f"{size:8d}{count:10d}{res.p50_ms:10.1f}{res.p99_ms:10.1f}"
                      f"{res.deliveries:>8d}/{res.expected}", flush=True)  # fmt: skip
        _chart(rows)


def _chart(rows: list[tuple[int, int, float, float]]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no chart; pip install matplotlib)")
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    for count in (1, 2):
        xs = [r[0] for r in rows if r[1] == count]
        ax.plot(xs, [r[2] for r in rows if r[1] == count], marker="o", label=f"p50, {count} inst.")
        ax.plot(xs, [r[3] for r in rows if r[1] == count], marker="x", ls="--",
                label=f"p99, {count} inst.")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("members in the room")
    ax.set_ylabel("delivery latency (ms)")
    ax.legend()
    out = ROOT / "chat" / "experiment.png"
    out.parent.mkdir(exist_ok=True)
    fig.savefig(out, dpi=100, bbox_inches="tight")
    print(f"chart: {out}")


if __name__ == "__main__":
    main()
