"""`python -m common.redis_cluster_server`, as the README's checklist runs it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from common.redis import create_redis
from common.redis_server import ping
from tests.support import ROOT


async def _round_trip(url: str) -> bool:
    client = create_redis(url)
    try:
        await client.set("{checklist}", "ok")
        return await client.get("{checklist}") == b"ok"
    finally:
        await client.aclose()


def test_the_command_starts_a_cluster_prints_its_url_and_stops_on_ctrl_c(
    tmp_path: Path,
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "common.redis_cluster_server"],
        cwd=ROOT,
        env={**os.environ, "DATA_DIR": str(tmp_path), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        lines = [proc.stdout.readline() for _ in range(8)]
        roles = [line.split()[0] for line in lines[:6]]
        assert sorted(roles) == ["master"] * 3 + ["slave"] * 3
        url = lines[7].split()[0].removeprefix("REDIS_URL=")
        assert asyncio.run(_round_trip(url))
        ports = [int(node.rsplit(":", 1)[1]) for node in url.split("//")[1].split(",")]
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    assert not any(ping(port) for port in ports)  # every node stopped with it
