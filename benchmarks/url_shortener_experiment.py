"""make experiment-url_shortener: what each layer of the redirect path buys.

The same Zipf-popular redirect load (a few hot links, a long tail: s = 1.1 over 1,000 links)
against four set-ups of the same service, each started fresh and warmed up:

1. SQL only: no Redis (nothing listens at its address), no in-process cache;
2. Redis cache-aside: links read through Redis, visits still parsed and written in process;
3. plus the in-process cache (hot links answered with no network at all);
4. plus visits through the Redis stream (a writer process parses and writes them).

Prints throughput and p50/p99 for each, and writes url_shortener/experiment.png.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import random
import tempfile
from contextlib import ExitStack
from pathlib import Path

import httpx

from benchmarks import loadgen
from common.processes import ServiceProcess
from common.redis_server import RedisProcess, free_port

ADMIN = {"x-api-key": "experiment-admin-key"}
CHART = Path(__file__).parent.parent / "url_shortener" / "experiment.png"
SETUPS = [
    ("SQL only", {"LOCAL_CACHE_TTL_SECONDS": "0", "VISITS_VIA_STREAM": "false"}, False),
    ("Redis cache-aside", {"LOCAL_CACHE_TTL_SECONDS": "0", "VISITS_VIA_STREAM": "false"}, True),
    ("+ in-process cache", {"VISITS_VIA_STREAM": "false"}, True),
    ("+ visits via stream", {}, True),
]


def zipf_paths(codes: list[str], n: int, s: float = 1.1, seed: int = 7) -> list[str]:
    """n request paths drawn with Zipf weights: rank r is asked 1/r^s as often as rank 1."""
    cumulative = list(itertools.accumulate(1 / (r**s) for r in range(1, len(codes) + 1)))
    rng = random.Random(seed)
    return [f"/{codes[bisect.bisect(cumulative, rng.random() * cumulative[-1])]}" for _ in range(n)]


def run_setup(
    name: str, extra: dict[str, str], with_redis: bool, redis_url: str, args: argparse.Namespace
) -> loadgen.Result:
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            "URL_SHORTENER_REDIS_URL": redis_url
            if with_redis
            else f"redis://127.0.0.1:{free_port()}/0",
            "URL_SHORTENER_DATA_DIR": tmp,
            "URL_SHORTENER_ADMIN_KEY": ADMIN["x-api-key"],
            "URL_SHORTENER_ACCESS_LOG": "false",
            "URL_SHORTENER_CREATE_RATE_PER_MINUTE": "0",
            **{f"URL_SHORTENER_{k}": v for k, v in extra.items()},
        }
        server = ServiceProcess(
            "url_shortener", env, log_path=Path(tmp) / "server.log", args=["all"]
        )
        server.start(timeout=30)
        try:
            links = [{"url": f"https://example.com/article/{i}"} for i in range(args.links)]
            resp = httpx.post(
                f"{server.url}/api/links/bulk", json={"links": links}, headers=ADMIN, timeout=60
            )
            codes = [r["link"]["code"] for r in resp.json()["results"]]
            paths = zipf_paths(codes, 20_000)
            loadgen.run(server.url, paths, seconds=2, connections=args.connections)  # warm up
            result = loadgen.run(
                server.url, paths, seconds=args.seconds, connections=args.connections
            )
        finally:
            server.stop()
    print(
        f"{name:22s}{result.rps:10.0f}{result.p50_ms:10.2f}{result.p99_ms:10.2f}{result.errors:8d}",
        flush=True,
    )
    return result


def chart(names: list[str], results: list[loadgen.Result]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.bar(names, [r.rps for r in results], color="#3b7dd8")
    left.set_title("redirects per second (higher is better)")
    x = range(len(names))
    right.bar([i - 0.2 for i in x], [r.p50_ms for r in results], width=0.4, label="p50")
    right.bar([i + 0.2 for i in x], [r.p99_ms for r in results], width=0.4, label="p99")
    right.set_xticks(list(x), names)
    right.set_title("latency, ms (lower is better)")
    right.legend()
    for axis in (left, right):
        axis.tick_params(axis="x", labelrotation=15)
    fig.suptitle("The same Zipf-popular redirect load, one layer added at a time")
    fig.tight_layout()
    fig.savefig(CHART, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--links", type=int, default=1000)
    args = parser.parse_args()
    with ExitStack() as stack:
        redis_url = stack.enter_context(RedisProcess()).url
        print(f"{'set-up':22s}{'req/s':>10s}{'p50 ms':>10s}{'p99 ms':>10s}{'errors':>8s}")
        results = [run_setup(name, extra, r, redis_url, args) for name, extra, r in SETUPS]
    chart([name for name, _, _ in SETUPS], results)
    print(f"\nchart: {CHART}")


if __name__ == "__main__":
    main()
