"""HTTP load for benchmarks: wrk when installed (Debian package `wrk`), else a small asyncio
generator (less precise, and it shares the CPU with the server: prefer wrk)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

_WRK_SCRIPT = """
local paths = {}
for line in io.lines("%(paths)s") do paths[#paths + 1] = line end
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i %% #paths) + 1])
end
done = function(summary, latency, requests)
  io.write(string.format(
    "JSON{\\"requests\\":%%d,\\"seconds\\":%%f,\\"p50_us\\":%%d,\\"p99_us\\":%%d,\\"errors\\":%%d,"
    .. "\\"non2xx3xx\\":%%d}\\n",
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
"""


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    tool: str


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def run(base_url: str, paths: list[str], *, seconds: int, connections: int) -> Result:
    """GET the paths round-robin for `seconds`; throughput and latency percentiles."""
    if have_wrk():
        return _wrk(base_url, paths, seconds=seconds, connections=connections)
    return asyncio.run(_python(base_url, paths, seconds=seconds, connections=connections))


def _wrk(base_url: str, paths: list[str], *, seconds: int, connections: int) -> Result:
    with tempfile.TemporaryDirectory() as tmp:
        paths_file = Path(tmp, "paths.txt")
        paths_file.write_text("\n".join(paths) + "\n")
        script = Path(tmp, "bench.lua")
        script.write_text(_WRK_SCRIPT % {"paths": paths_file})
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), base_url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    line = next(x for x in out.splitlines() if x.startswith("JSON"))
    data = json.loads(line[4:])
    return Result(
        rps=data["requests"] / data["seconds"],
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        requests=data["requests"],
        errors=data["errors"] + data["non2xx3xx"],
        tool="wrk",
    )


async def _python(base_url: str, paths: list[str], *, seconds: int, connections: int) -> Result:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=connections)
    async with httpx.AsyncClient(base_url=base_url, limits=limits) as client:

        async def worker(offset: int) -> None:
            nonlocal errors
            i = offset
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                resp = await client.get(paths[i % len(paths)], follow_redirects=False)
                latencies.append(time.perf_counter() - start)
                if resp.status_code >= 400:
                    errors += 1
                i += connections

        started = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(connections)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return Result(
        rps=len(latencies) / elapsed,
        p50_ms=latencies[len(latencies) // 2] * 1000,
        p99_ms=latencies[int(len(latencies) * 0.99)] * 1000,
        requests=len(latencies),
        errors=errors,
        tool="python",
    )
