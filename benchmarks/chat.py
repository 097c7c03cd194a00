"""make bench-chat: (a) one room's fan-out against a bare `websockets` broadcast server,
(b) the memory an idle authenticated connection costs one instance.

(a) `--members` connections (default 1,000) spread over two `python -m chat` instances on
one Redis, joined to one room; one sender at `--rate` messages a second for `--seconds`.
The same load goes to a bare broadcast server (benchmarks.chat_load: no auth, persistence,
seq or Redis: the ceiling). Delivery latency is measured by the receiving process, which
also sent (one clock). (b) One instance; another process opens `--idle` connections, each
authenticated and joined to a room; the instance's resident memory before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from benchmarks.chat_load import Fanout, fanout
from chat.store import Base, ChatStore
from common.auth import TokenIssuer
from common.db import create_engine, create_schema, session_factory
from common.processes import ROOT, ServiceProcess
from common.redis_server import RedisProcess, free_port

SECRET = "bench-chat-secret-0123456789-abcdefgh"


async def _seed(url: str, users: int) -> tuple[list[str], int]:
    """Users written straight to SQL (a thousand scrypt hashes would take a minute) and one
    public room; a token for each user."""
    engine = create_engine(url)
    await create_schema(engine, Base)
    store = ChatStore(session_factory(engine))
    issuer = TokenIssuer(secret=SECRET, ttl=24 * 3600)
    tokens, ids = [], []
    for i in range(users):
        user = await store.create_user(username=f"bench{i}", password_hash="-", now_ms=0)
        ids.append(user.id)
        tokens.append(issuer.issue(str(user.id), name=user.username)[0])
    room, _ = await store.create_room(
        name="bench", private=False, creator=ids[0], members=ids, now_ms=0
    )
    await engine.dispose()
    return tokens, room.id


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _row(name: str, res: Fanout) -> str:
    return (
        f"{name:34s}{res.per_second:12.0f}{res.p50_ms:10.1f}{res.p99_ms:10.1f}"
        f"{res.deliveries:>11d}/{res.expected}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=10.0, help="messages per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--idle", type=int, default=10_000, help="idle connections (b)")
    parser.add_argument("--only", choices=["fanout", "idle"], help="run one part")
    args = parser.parse_args()

    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        redis_url = os.environ.get("REDIS_URL") or stack.enter_context(RedisProcess()).url
        db = f"sqlite:///{Path(tmp) / 'chat.db'}"
        tokens, room = asyncio.run(_seed(db, max(args.members, 1)))
        env = {
            "CHAT_REDIS_URL": redis_url,
            "CHAT_DATABASE_URL": db,
            "CHAT_DATA_DIR": tmp,
            "CHAT_JWT_SECRET": SECRET,
            "CHAT_ACCESS_LOG": "false",
            "CHAT_LOG_LEVEL": "WARNING",
            "CHAT_SEND_RATE_PER_SECOND": "100000",
            "CHAT_SEND_BURST": "100000",
            # Per-user delivered receipts to a 1,000-member room are a million frames a
            # message: off here (README, "What breaks first").
            "CHAT_DELIVERY_RECEIPTS": "false",
        }
        instances = [
            ServiceProcess("chat", env, log_path=Path(tmp) / f"chat-{i}.log") for i in range(2)
        ]
        for inst in instances:
            stack.callback(inst.stop)
            inst.start(timeout=30)
        port = free_port()
        ceiling = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.chat_load", "ceiling", str(port)],
            cwd=ROOT, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        stack.callback(ceiling.kill)
        assert ceiling.stdout is not None and ceiling.stdout.readline().strip() == "ready"

        ws = [inst.url.replace("http://", "ws://") + "/ws" for inst in instances]
        if args.only != "idle":
            _fanout_part(args, ws, port, tokens, room)
        ceiling.kill()
        if args.only != "fanout":
            _idle_part(args, instances[0], ws[0], tokens, room, stack)


def _fanout_part(
    args: argparse.Namespace, ws: list[str], port: int, tokens: list[str], room: int
) -> None:
    load = {"members": args.members, "rate": args.rate, "seconds": args.seconds}
    print(f"(a) one room, {args.members} members, {args.rate:g} msg/s for {args.seconds:g} s",
          flush=True)  # fmt: skip
    bare = asyncio.run(fanout([f"ws://127.0.0.1:{port}"], chat=False, **load))  # type: ignore[arg-type]
    ours = asyncio.run(fanout(ws, chat=True, tokens=tokens, room=room, **load))  # type: ignore[arg-type]
    print(f"{'':34s}{'deliv/s':>12s}{'p50 ms':>10s}{'p99 ms':>10s}{'delivered':>12s}")
    print(_row("bare websockets broadcast (ceiling)", bare))
    print(_row("chat, two instances + Redis + SQL", ours))
    print(f"deliveries/s ratio chat/ceiling: {ours.per_second / bare.per_second:.2f} "
          "(goal >= 0.60)")  # fmt: skip


def _idle_part(
    args: argparse.Namespace,
    instance: ServiceProcess,
    url: str,
    tokens: list[str],
    room: int,
    stack: ExitStack,
) -> None:
    """(b) idle connections on one instance, held by another process."""
    pid = instance.proc.pid if instance.proc else 0
    time.sleep(1.0)
    before = _rss_kib(pid)
    holder = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.chat_load", "hold", url, str(room),
         str(args.idle)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    stack.callback(holder.kill)
    assert holder.stdin is not None and holder.stdout is not None
    holder.stdin.write(",".join(tokens[:1000]) + "\n")
    holder.stdin.flush()
    started = time.perf_counter()
    ready = holder.stdout.readline().split()
    opened = int(ready[1]) if len(ready) == 2 else 0
    took = time.perf_counter() - started
    time.sleep(2.0)
    after = _rss_kib(pid)
    per = (after - before) / max(opened, 1)
    print()
    print(f"(b) {opened} idle authenticated connections on one instance "
          f"(opened in {took:.1f} s by another process)")  # fmt: skip
    print(f"resident memory: {before / 1024:.0f} MiB before, {after / 1024:.0f} MiB after: "
          f"{per:.1f} KiB per connection")  # fmt: skip
    projected = (before + per * 10_000) / 1024
    print(f"10,000 connections: {projected:.0f} MiB resident (goal < 1024 MiB)"
          + ("" if opened >= 10_000 else f", projected from {opened}"))  # fmt: skip
    holder.stdin.close()
    holder.wait(30)


if __name__ == "__main__":
    main()
