"""make bench-url_shortener: cached redirect vs. a trivial fixed redirect, same run.

Starts a private Redis (unless REDIS_URL is set), the shortener as `make run` does
(`python -m url_shortener`, SQLite under a temporary data folder, access log on), and the
baseline app (benchmarks.baseline: the same app wiring and server settings, one route that
returns a fixed 302). Both are loaded with the same tool, connections and duration, in
alternating rounds; the best round of each is compared, and each round's own ratio is shown
(a round's two figures are measured back to back, so slow drift of the machine cancels).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

import httpx

from benchmarks import loadgen
from common.processes import ServiceProcess
from common.redis_server import RedisProcess, free_port

ADMIN = {"x-api-key": "bench-admin-key"}
SLOW_MS = 3.0  # a cached redirect takes ~0.1 ms inside the app; over this it waited for I/O


def waited_in_app(log: Path, since: float, until: float) -> tuple[int, int]:
    """(redirects answered between `since` and `until`, how many of them took over SLOW_MS
    inside the app), from the access log's `duration_ms`: the time from the request's
    start in the app to its response, so time spent waiting for I/O or the event loop after
    the request started, not time queued before it. It tells a tail made inside the server
    (a Redis round trip on some requests) from one made in front of it."""
    total = slow = 0
    with log.open(errors="replace") as lines:
        for line in lines:
            if '"route": "/{code}"' not in line:
                continue
            entry = json.loads(line)
            at = datetime.fromisoformat(entry["timestamp"]).timestamp()
            if since <= at <= until:
                total += 1
                slow += entry["duration_ms"] > SLOW_MS
    return total, slow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--links", type=int, default=1000)
    args = parser.parse_args()

    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        redis_url = os.environ.get("REDIS_URL")
        if not redis_url:
            redis_url = stack.enter_context(RedisProcess()).url
        env = {
            "URL_SHORTENER_REDIS_URL": redis_url,
            "URL_SHORTENER_DATA_DIR": tmp,
            "URL_SHORTENER_ADMIN_KEY": ADMIN["x-api-key"],
            "URL_SHORTENER_LOG_FORMAT": "json",
        }
        logs = Path(tmp)
        servers = [
            # As `make run-url_shortener` runs it: the server and a visit writer beside it.
            ServiceProcess("url_shortener", env, log_path=logs / "service.log", args=["all"]),
            ServiceProcess("benchmarks.baseline", env, log_path=logs / "baseline.log",
                           env_prefix="BASELINE"),
            # The same service with its Redis gone and no local cache: every redirect is
            # answered from SQL (what cache-aside saves, and the degraded mode's speed).
            ServiceProcess("url_shortener", {**env,
                           "URL_SHORTENER_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
                           "URL_SHORTENER_LOCAL_CACHE_TTL_SECONDS": "0"},
                           log_path=logs / "sql-only.log"),
        ]  # fmt: skip
        for server in servers:
            stack.callback(server.stop)
            server.start(timeout=30)
        service, baseline, sql_only = (server.url for server in servers)

        links = [{"url": f"https://example.com/article/{i}"} for i in range(args.links)]
        resp = httpx.post(f"{service}/api/links/bulk", json={"links": links}, headers=ADMIN)
        codes = [r["link"]["code"] for r in resp.json()["results"]]
        for code in codes:  # warm the cache: the benchmark measures cache hits
            assert httpx.get(f"{service}/{code}").status_code == 302
        rng = random.Random(7)
        paths = [f"/{rng.choice(codes)}" for _ in range(10_000)]

        best: dict[str, loadgen.Result] = {}
        paired: list[float] = []  # redirect / baseline within each round (back to back)
        tails: list[float] = []  # redirect p99 / baseline p99 within each round
        for round_ in range(args.rounds):
            for name, url in (
                ("baseline", baseline),
                ("redirect", service),
                ("sql", sql_only),
            ):
                started = time.time()
                res = loadgen.run(url, paths, seconds=args.seconds, connections=args.connections)
                print(
                    f"round {round_ + 1} {name:9s} {res.rps:9.0f} req/s  p50 {res.p50_ms:6.2f} ms"
                    f"  p99 {res.p99_ms:6.2f} ms  errors {res.errors}"
                    f"  (load average {os.getloadavg()[0]:.2f})",
                    flush=True,
                )
                if name not in best or res.rps > best[name].rps:
                    best[name] = res
                if name == "baseline":
                    round_base = res
                elif name == "redirect":
                    total, slow = waited_in_app(logs / "service.log", started, time.time())
                    print(
                        f"round {round_ + 1} redirects over {SLOW_MS:g} ms inside the app: "
                        f"{slow} of {total} ({100 * slow / max(total, 1):.2f}%)",
                        flush=True,
                    )
                    paired.append(res.rps / round_base.rps)
                    tails.append(res.p99_ms / round_base.p99_ms)
                    ok = paired[-1] >= 0.8 and tails[-1] <= 2.0
                    print(
                        f"round {round_ + 1} ratios: throughput {paired[-1]:.2f} (goal >= 0.80),"
                        f" p99 {tails[-1]:.2f}x the baseline's (goal <= 2.0): "
                        f"{'met' if ok else 'MISSED'}",
                        flush=True,
                    )

    base, redirect, sql = best["baseline"], best["redirect"], best["sql"]
    print()
    print(f"load tool: {base.tool}, {args.connections} connections, {args.seconds}s x "
          f"{args.rounds} rounds (best round shown)")  # fmt: skip
    print(f"{'':28s}{'req/s':>10s}{'p50 ms':>10s}{'p99 ms':>10s}")
    print(f"{'trivial fixed redirect':28s}{base.rps:10.0f}{base.p50_ms:10.2f}{base.p99_ms:10.2f}")
    print(f"{'cached short-link redirect':28s}{redirect.rps:10.0f}{redirect.p50_ms:10.2f}"
          f"{redirect.p99_ms:10.2f}")  # fmt: skip
    print(
        f"{'redirect from SQL (no cache)':28s}{sql.rps:10.0f}{sql.p50_ms:10.2f}{sql.p99_ms:10.2f}"
    )
    ratio = redirect.rps / base.rps
    print(f"throughput ratio redirect/baseline: {ratio:.2f} (goal >= 0.80; best round of each)")
    each = " ".join(f"{r:.2f}" for r in paired)
    print(f"  per round (back to back):         {each}; median {statistics.median(paired):.2f}")
    tail_each = " ".join(f"{r:.2f}" for r in tails)
    print(f"p99 redirect/baseline per round:    {tail_each}; median {statistics.median(tails):.2f}"
          " (goal <= 2.0)")  # fmt: skip
    met = sum(1 for r, t in zip(paired, tails, strict=True) if r >= 0.8 and t <= 2.0)
    print(f"both goals met in {met} of {len(paired)} rounds")
    print(f"cache speed-up over SQL:            {redirect.rps / sql.rps:.2f}x")


if __name__ == "__main__":
    main()
