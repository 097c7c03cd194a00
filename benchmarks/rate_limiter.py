"""Rate limiter benchmark: `make bench-rate_limiter` (python -m benchmarks.rate_limiter).

In one run, on one Redis (a private one unless REDIS_URL is given):
1. decisions/s and p99 of every algorithm through the library (`RateLimiter.acquire`),
   beside the `limits` library's moving-window and sliding-window-counter strategies at the
   same concurrency, and beside a raw EVALSHA of a trivial script (the round-trip ceiling);
2. the middleware's cost: requests/s of a protected route over the same route unprotected,
   through real uvicorn processes: on a bare FastAPI app, on the same app with its start-up
   heap frozen (`gc.freeze()`), in the suite's own wiring (`common.build_app` served by
   `common.server`, which freezes too), and on the bare app with opt-in prefetching; and
   the cyclic GC's collections and time per request on the bare app, with and without it;
3. the same servers' CPU instructions per request, counted by callgrind (when valgrind is
   installed);
4. refunds: a user refused by a tight limit of its own retries 20 at a time while other
   users ask a shared limit for 60% of it; how many of theirs are admitted, with refunds and
   without, on each algorithm.

Env: BENCH_SECONDS (per library figure and per middleware run, default 2.5),
BENCH_CONCURRENCY (library tasks, default 32), BENCH_CONNECTIONS (HTTP connections, default
32), BENCH_ROUNDS (pairs of runs per middleware figure, default 10), BENCH_PREFETCH_TTL
(the prefetching server's ttl, default 0.05), BENCH_PIN (0: the middleware and GC sections'
servers share the CPUs with the load and Redis; by default each has a CPU of its own),
BENCH_ONLY (library | middleware | gc | instructions | refunds | breakdown: where a protected
request's instructions go, stage by stage; only run when asked for).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

SECONDS = float(os.environ.get("BENCH_SECONDS", "2.5"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "32"))
KEYS = 10_000
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "32"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "10"))
# The prefetching server's ttl (its batches are what it would spend in that time).
PREFETCH_TTL = float(os.environ.get("BENCH_PREFETCH_TTL", "0.05"))
# Under valgrind a server runs about this many times slower: a prefetching server counted
# there gets a ttl this much longer, so that its batches are the size they are in real time.
VALGRIND_SLOWDOWN = 50


async def measure(
    op: Callable[[int], Awaitable[Any]], seconds: float = SECONDS
) -> tuple[float, float]:
    """Run `op(i)` from CONCURRENCY tasks for `seconds`; (ops/s, p99 ms)."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    counter = 0

    async def worker() -> None:
        nonlocal counter
        while time.perf_counter() < deadline:
            counter += 1
            i = counter
            t0 = time.perf_counter()
            await op(i)
            latencies.append(time.perf_counter() - t0)

    for i in range(200):  # warm-up: connections, scripts
        await op(i)
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    elapsed = time.perf_counter() - start
    p99 = statistics.quantiles(latencies, n=100)[98] * 1000
    return len(latencies) / elapsed, p99


def row(name: str, rate: float, p99: float, *baselines: tuple[str, float]) -> None:
    ratios = "  ".join(f"{rate / base:5.2f}x {label}" for label, base in baselines)
    latency = f"p99 {p99:6.2f} ms" if p99 else " " * 13
    print(f"  {name:<40} {rate:>9,.0f}/s  {latency}  {ratios}")


async def library(redis_url: str) -> None:
    from limits import parse
    from limits.aio.storage import RedisStorage
    from limits.aio.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter

    from common.redis import create_redis
    from rate_limiter import Algorithm, Limit, RateLimiter, RedisBackend
    from rate_limiter.algorithms import MAX_PER_UNIT, PER_UNIT

    redis = create_redis(redis_url, timeout=5)
    backend = RedisBackend(redis)
    await backend.load()
    await redis.flushall()
    print(f"Library: {CONCURRENCY} concurrent tasks, {KEYS:,} keys, {SECONDS}s per figure")

    sha = await redis.script_load("return 1")
    ceiling, ceiling_p99 = await measure(lambda i: redis.evalsha(sha, 1, f"k{i % KEYS}"))

    async def batch(i: int) -> None:
        pipe = redis.pipeline(transaction=False)
        for j in range(CONCURRENCY):
            pipe.evalsha(sha, 1, f"k{(i + j) % KEYS}")
        await pipe.execute()

    batches, batch_p99 = await measure(batch)
    pipelined = batches * CONCURRENCY

    item = parse("1000000/hour")
    theirs: dict[str, tuple[float, float]] = {}
    for impl in ("redispy", "coredis"):
        storage = RedisStorage(redis_url.replace("redis://", "async+redis://"), implementation=impl)
        for label, strategy in (
            ("moving window", MovingWindowRateLimiter(storage)),
            ("sliding window counter", SlidingWindowCounterRateLimiter(storage)),
        ):
            theirs[f"limits {label} ({impl})"] = await measure(
                lambda i, s=strategy: s.hit(item, f"k{i % KEYS}")  # type: ignore[misc]
            )
    best_limits = max(rate for rate, _ in theirs.values())
    best_label = max(theirs, key=lambda k: theirs[k][0])

    print("  baselines")
    row("raw EVALSHA 'return 1' (ceiling)", ceiling, ceiling_p99)
    # (its p99 is that of a whole batch of CONCURRENCY commands)
    row(f"raw EVALSHA, pipelined by {CONCURRENCY}", pipelined, batch_p99, ("ceiling", ceiling))
    for label, (rate, p99) in theirs.items():
        row(label, rate, p99, ("ceiling", ceiling))
    print("  this library, autopipelined (ratios vs the ceiling and vs the fastest limits:")
    print(f"  {best_label})")
    for algorithm in Algorithm:
        # (never refusing: a few dozen decisions per key; the per-unit ones are bounded)
        rate = MAX_PER_UNIT if algorithm in PER_UNIT else 1_000_000
        limiter = RateLimiter(Limit(rate, 3600, algorithm), backend)
        rate, p99 = await measure(lambda i, lim=limiter: lim.acquire(f"k{i % KEYS}"))  # type: ignore[misc]
        row(
            algorithm.value,
            rate,
            p99,
            ("ceiling", ceiling),
            ("pipelined", pipelined),
            ("limits", best_limits),
        )
    await backend.aclose()
    print("  this library, one command per call (autopipeline=False)")
    plain = RedisBackend(redis, autopipeline=False)
    for algorithm in (Algorithm.GCRA, Algorithm.SLIDING_WINDOW):
        limiter = RateLimiter(Limit(1_000_000, 3600, algorithm), plain)
        rate, p99 = await measure(lambda i, lim=limiter: lim.acquire(f"k{i % KEYS}"))  # type: ignore[misc]
        row(algorithm.value, rate, p99, ("ceiling", ceiling), ("limits", best_limits))
    await hot_key(redis)
    await redis.aclose()


async def hot_key(redis: Any) -> None:
    """Every task on one key (one abusive client, or one global limit): the requests of a
    loop turn coalesced into one script call, against one call each. Besides decisions/s,
    what the hot key's Redis spends in scripts per decision, by its own accounting
    (`INFO commandstats`): one key lives on one shard, so that is what caps it."""
    from rate_limiter import Limit, RateLimiter, RedisBackend

    print(f"  one hot key ({CONCURRENCY} tasks on one GCRA key), Redis script time per decision")
    figures: dict[bool, tuple[float, float, float]] = {}
    for coalesce in (False, True):
        backend = RedisBackend(redis, coalesce=coalesce)
        await backend.load()
        limiter = RateLimiter(Limit(10**9, 1), backend)  # never refuses
        made = 0

        async def op(i: int, lim: RateLimiter = limiter) -> None:
            nonlocal made
            made += 1
            await lim.acquire("hot")

        await redis.config_resetstat()
        rate, p99 = await measure(op)
        stats = await redis.info("commandstats")
        figures[coalesce] = (rate, p99, float(stats["cmdstat_evalsha"]["usec"]) / made)
        await backend.aclose()
    for coalesce, label in ((False, "one script call each"), (True, "coalesced per loop turn")):
        rate, p99, usec = figures[coalesce]
        ratios = ""
        if coalesce:
            ratios = f"  {rate / figures[False][0]:5.2f}x / {figures[False][2] / usec:5.2f}x less"
        print(f"  {label:<40} {rate:>9,.0f}/s  p99 {p99:6.2f} ms  {usec:5.2f} us{ratios}")


# --- refunds ---------------------------------------------------------------------------


async def _retry_flood(
    redis_url: str, algorithm: Any, refunds: bool, prefetch: bool = False
) -> tuple[int, int]:
    """SECONDS of a refused user's retries (20 in flight, each checking its own limit of
    1/min and the shared one of 100/s at once, as the service does) beside other users
    asking the shared limit 60 times a second; (their requests admitted, made). `prefetch`:
    through a PrefetchBackend (the shared key's tokens taken in batches)."""
    from common.redis import create_redis
    from rate_limiter import AsyncBackend, Limit, PrefetchBackend, RedisBackend
    from rate_limiter.refunds import gives_back

    redis = create_redis(redis_url)
    await redis.flushdb()
    primary = RedisBackend(redis)
    await primary.load()
    backend: AsyncBackend = PrefetchBackend(primary, share=0.1) if prefetch else primary
    shared, own, theirs = Limit(100, 1.0, algorithm), Limit(1, 60.0), Limit(1000, 1.0)
    deadline = time.perf_counter() + SECONDS
    admitted = made = 0

    async def check(user: str, limit: Limit) -> bool:
        mine, common = await asyncio.gather(
            backend.acquire(user, limit), backend.acquire("tenant", shared)
        )
        if refunds and not mine.allowed and gives_back(shared, common, 1):
            await backend.refund("tenant", shared, 1, common)
        return mine.allowed and common.allowed

    async def retrying() -> None:
        while time.perf_counter() < deadline:
            await check("refused", own)

    async def others() -> None:
        nonlocal admitted, made
        while time.perf_counter() < deadline:
            made += 1
            admitted += await check(f"user{made}", theirs)
            await asyncio.sleep(1 / 60)

    await asyncio.gather(others(), *(retrying() for _ in range(20)))
    await primary.aclose()
    await redis.aclose()
    return admitted, made


async def refund_flood(redis_url: str) -> None:
    from rate_limiter import Algorithm

    print(
        "Refunds: a refused user retrying 20 at a time; the other users' requests admitted"
        " by a shared 100/s limit they ask 60 times a second"
    )
    cases = [(a, False) for a in Algorithm if a is not Algorithm.CONCURRENCY]
    for algorithm, prefetch in [*cases, (Algorithm.GCRA, True)]:
        figures = []
        for refunds in (True, False):
            admitted, made = await _retry_flood(redis_url, algorithm, refunds, prefetch)
            figures.append(f"{admitted:>4}/{made:<4} ({admitted / made:4.0%})")
        title = f"{algorithm.value}{', prefetched' if prefetch else ''}"
        print(f"  {title:<18} with refunds {figures[0]}   without {figures[1]}")


# --- middleware cost ---------------------------------------------------------------------


def _limiter_lifespan(redis_url: str, prefetch: bool = False) -> Any:
    """Open Redis and the limiter's backend for the app's life (as a service's lifespan does);
    `prefetch`: with the opt-in PrefetchBackend (batches of tokens spent in the process)."""
    from fastapi import FastAPI

    from common.redis import create_redis
    from rate_limiter import AsyncBackend, FallbackBackend, PrefetchBackend, RedisBackend

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = create_redis(redis_url)
        backend = RedisBackend(redis)
        await backend.load()
        decider: AsyncBackend = backend
        if prefetch:
            decider = PrefetchBackend(backend, ttl=PREFETCH_TTL)
        app.state.rate_limit_backend = FallbackBackend(decider)
        yield
        await backend.aclose()
        await redis.aclose()

    return lifespan


def bare_app(protected: bool, redis_url: str, prefetch: bool = False) -> Any:
    """A bare FastAPI app with GET /ping, limited or not."""
    from fastapi import FastAPI

    from rate_limiter import Limit
    from rate_limiter.middleware import RateLimitMiddleware, RouteRule

    app = FastAPI(lifespan=_limiter_lifespan(redis_url, prefetch))

    @app.get("/ping")
    async def ping() -> dict[str, bool]:
        return {"ok": True}

    if protected:
        app.add_middleware(
            RateLimitMiddleware, rules=[RouteRule(Limit.per_second(10**9), path="/ping")]
        )
    return app


def suite_app(protected: bool, port: int, redis_url: str) -> tuple[Any, Any]:
    """The same route in the suite's own app wiring (common.build_app: request ids, metrics,
    access log, problem+json); the app and its settings."""
    from prometheus_client import CollectorRegistry
    from starlette.middleware import Middleware

    from common.app import build_app
    from common.health import HealthChecks
    from rate_limiter import Limit
    from rate_limiter.middleware import RateLimitMiddleware, RouteRule
    from rate_limiter.settings import RateLimiterSettings

    settings = RateLimiterSettings(port=port, redis_url=redis_url, log_format="json", grpc=False)
    limits = [
        Middleware(RateLimitMiddleware, rules=[RouteRule(Limit.per_second(10**9), path="/ping")])
    ]
    app = build_app(
        settings,
        title="bench",
        lifespan=_limiter_lifespan(redis_url),
        registry=CollectorRegistry(),
        checks=HealthChecks(),
        middleware=limits if protected else [],
    )

    @app.get("/ping")
    async def ping() -> dict[str, bool]:
        return {"ok": True}

    return app, settings


def serve(
    protected: bool, port: int, redis_url: str, frozen: bool = False, prefetch: bool = False
) -> None:
    """The server side: one uvicorn process serving the bare app. `frozen`: the start-up
    heap moved out of the cyclic GC's sight first (`gc.freeze()`, as `common.server` does
    for every service). `prefetch`: the limiter takes tokens in batches (opt-in mode)."""

    app = bare_app(protected, redis_url, prefetch)
    if frozen:
        gc.collect()
        gc.freeze()
    _run(app, port)


def _run(app: Any, port: int) -> None:
    """Serve `app` on loopback until interrupted, as every benchmark server does (no
    access log: its formatting would be counted as the app's)."""
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def serve_suite(protected: bool, port: int, redis_url: str) -> None:
    """The suite's wiring served by common.server, the way every service runs."""
    from common.server import serve as serve_app

    app, settings = suite_app(protected, port, redis_url)
    serve_app(app, settings)


def _cpu_split() -> tuple[set[int], set[int]] | None:
    """The CPUs for the server under test (one) and for everything else (the load generator
    and Redis), or None on a machine with one CPU or when BENCH_PIN=0."""
    if os.environ.get("BENCH_PIN", "1") == "0" or not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    return {cpus[-1]}, set(cpus[:-1])


def _pinning_note() -> str:
    split = _cpu_split()
    if split is None:
        return "Servers below: not pinned (one CPU, or BENCH_PIN=0)"
    return (
        f"Servers below: each on CPU {min(split[0])}; the load generator and the private Redis"
        f" on CPU {','.join(map(str, sorted(split[1])))} (BENCH_PIN=0 to let them share)"
    )


# The CPU `_server` puts its server on, inside `pinned`.
_server_cpus: set[int] | None = None


@contextlib.contextmanager
def pinned(redis: Any = None) -> Iterator[None]:
    """For the block, this process (and so the load generator it starts) and the private
    Redis run on the CPUs `_cpu_split` leaves them, and `_server` puts each server on a CPU of
    its own: the server is measured as on a machine of its own, its core doing neither its
    load's work nor Redis's (which a deployed server's does not either). As before
    everywhere else."""
    global _server_cpus
    split = _cpu_split()
    if split is None:
        yield
        return
    before = os.sched_getaffinity(0)
    pids = [0] + ([redis.proc.pid] if redis is not None else [])
    for pid in pids:
        os.sched_setaffinity(pid, split[1])
    _server_cpus = split[0]
    try:
        yield
    finally:
        _server_cpus = None
        for pid in pids:
            with contextlib.suppress(OSError):  # (Redis may have gone)
                os.sched_setaffinity(pid, before)


@contextlib.contextmanager
def _server(mode: str, protected: bool, redis_url: str) -> Iterator[int]:
    """One benchmark server (`python -m benchmarks.rate_limiter <mode>`) for the block,
    answering on the port it yields; stopped after. Inside `pinned`, on a CPU of its own."""
    from common.processes import wait_for
    from common.redis_server import free_port

    port = free_port()
    command = [sys.executable, "-m", "benchmarks.rate_limiter", mode]
    command += ["1" if protected else "0", str(port), redis_url]
    proc = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    if _server_cpus is not None:
        # Before the server has started any thread: those it starts inherit it.
        os.sched_setaffinity(proc.pid, _server_cpus)
    try:
        wait_for(lambda: _answers(port), timeout=20)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def middleware(redis_url: str, mode: str, title: str) -> None:
    """Requests/s of GET /ping unprotected and protected. Both servers are started once and
    loaded in turn, ROUNDS pairs of short runs (the order swapped every pair): this machine's
    speed drifts by tens of percent over seconds, and a pair run back to back sees the same
    drift. The median of the pairs' ratios is the figure; the best of each side is shown
    beside it (noise only ever slows a run down)."""
    from benchmarks import loadgen

    tool = "wrk" if loadgen.have_wrk() else "the built-in generator"
    seconds = max(1, round(SECONDS))  # wrk takes whole seconds
    print(f"{title}, {CONNECTIONS} connections, load by {tool}, {ROUNDS} pairs of {seconds}s")
    with contextlib.ExitStack() as servers:
        ports = {p: servers.enter_context(_server(mode, p, redis_url)) for p in (False, True)}

        def load(protected: bool, seconds: int) -> loadgen.Result:
            return loadgen.run(
                f"http://127.0.0.1:{ports[protected]}", ["/ping"],
                seconds=seconds, connections=CONNECTIONS,
            )  # fmt: skip

        for protected in (False, True):  # warm-up: connections, scripts, caches
            load(protected, 1)
        best: dict[bool, loadgen.Result] = {}
        paired: list[float] = []
        for i in range(ROUNDS):
            this_round: dict[bool, float] = {}
            for protected in (False, True) if i % 2 == 0 else (True, False):
                res = load(protected, seconds)
                this_round[protected] = res.rps
                if protected not in best or res.rps > best[protected].rps:
                    best[protected] = res
            paired.append(this_round[True] / this_round[False])
    base, limited = best[False], best[True]
    row("unprotected route (best run)", base.rps, base.p99_ms)
    row("protected route (gcra, Redis; best run)", limited.rps, limited.p99_ms)
    spread = ""
    if len(paired) > 1:  # (quartiles need two pairs at least)
        quartiles = statistics.quantiles(paired, n=4)
        spread = f"quartiles {quartiles[0]:.2f}-{quartiles[2]:.2f}; "
    print(
        f"  protected / unprotected, median of {ROUNDS} back-to-back pairs: "
        f"{statistics.median(paired):.2f} ({spread}best runs {limited.rps / base.rps:.2f})"
    )
    print("  each pair: " + " ".join(f"{r:.2f}" for r in paired))


# --- the cyclic GC's work per request ---------------------------------------------------


def serve_gc(protected: bool, port: int, redis_url: str) -> None:
    """The bare app counting the cyclic GC's collections and their time (`gc.callbacks`);
    GET /_gc answers the counts since the last GET /_gc (the limiter's rule is on /ping)."""

    app = bare_app(protected, redis_url)
    counts = {generation: [0, 0.0] for generation in (0, 1, 2)}
    started = [0.0]

    def on_collection(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            seen = counts[info["generation"]]
            seen[0] += 1
            seen[1] += time.perf_counter() - started[0]

    gc.callbacks.append(on_collection)

    @app.get("/_gc")
    async def collections() -> dict[str, list[float]]:
        out = {str(generation): list(seen) for generation, seen in counts.items()}
        for seen in counts.values():
            seen[:] = [0, 0.0]
        return out

    _run(app, port)


def gc_work(redis_url: str) -> None:
    """The cyclic GC's collections and time per 10,000 requests on the bare app, with and
    without the middleware, at 32 and 64 connections. A request waiting for its decision
    keeps its objects alive across a loop turn; enough of them at once and the young
    generation's threshold (700 tracked objects allocated and not yet freed) is crossed:
    collections the unprotected route, answered within one turn, hardly ever causes."""
    import httpx

    from benchmarks import loadgen

    seconds = max(1, round(SECONDS * 3))
    print(f"The cyclic GC on the bare app (gc.callbacks), {seconds}s of wrk per row")
    print(f"  {'per 10,000 requests:':<36} {'young':>6}  {'middle':>6}  {'full':>6}  GC time")
    for connections in (32, 64):
        for protected in (False, True):
            with _server("--serve-gc", protected, redis_url) as port:
                url = f"http://127.0.0.1:{port}"
                loadgen.run(url, ["/ping"], seconds=1, connections=connections)  # warm-up
                httpx.get(f"{url}/_gc")  # (counting from here)
                res = loadgen.run(url, ["/ping"], seconds=seconds, connections=connections)
                counts = httpx.get(f"{url}/_gc").json()
            per = 10_000 / max(1, res.requests)
            numbers = "  ".join(f"{counts[g][0] * per:>6.1f}" for g in ("0", "1", "2"))
            spent = sum(counts[g][1] for g in ("0", "1", "2"))
            title = f"{connections} connections, {'protected' if protected else 'unprotected'}"
            print(
                f"  {title:<36} {numbers}  {spent * 1000 * per:>6.1f} ms"
                f" ({spent / seconds:.1%} of the run)"
            )


# --- instructions per request (deterministic) -------------------------------------------


async def _send_requests(port: int, requests: int) -> None:
    """Exactly `requests` GET /ping over CONNECTIONS keep-alive connections."""

    async def connection(count: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(count):
            writer.write(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head[:40]
            length = next(
                int(line.split(b":")[1])
                for line in head.lower().split(b"\r\n")
                if line.startswith(b"content-length:")
            )
            await reader.readexactly(length)
        writer.close()
        await writer.wait_closed()

    share, extra = divmod(requests, CONNECTIONS)
    await asyncio.gather(*(connection(share + (i < extra)) for i in range(CONNECTIONS)))


def _server_instructions(mode: str, arg: str, requests: int, redis_url: str) -> int:
    """The instructions a whole server process (uvicorn, the app, the limiter) executes from
    start to exit when sent 100 warm-up requests and then `requests` more. `arg`: the
    server's first argument ("1" protected, "0" not; a stage for `--serve-stage`)."""
    import signal
    import tempfile

    from common.processes import wait_for
    from common.redis_server import free_port

    port = free_port()
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    command += [sys.executable, "-m", "benchmarks.rate_limiter", mode]
    command += [arg, str(port), redis_url]
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=log,
            env={
                **os.environ,
                # String hashes decide dict probes: a random seed moves the count by a few %.
                "PYTHONHASHSEED": "0",
                "BENCH_PREFETCH_TTL": str(PREFETCH_TTL * VALGRIND_SLOWDOWN),
            },
        )
        try:
            # (a patient probe: one that timed out would still be served, and counted)
            wait_for(lambda: _answers(port, timeout=60), timeout=300)
            asyncio.run(_send_requests(port, 100))
            asyncio.run(_send_requests(port, requests))
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(120)
        log.seek(0)
        found = [line for line in log if "Collected" in line]
    return int(found[-1].split()[-1])


# Each count is the difference of a server sent FEW requests and one sent MANY.
FEW, MANY = 4 * CONNECTIONS, 20 * CONNECTIONS
COUNTED = MANY - FEW


def _per_request(servers: list[tuple[str, str]], redis_url: str) -> dict[tuple[str, str], float]:
    """Instructions per request of each (mode, first argument) server: the difference of
    two servers' totals, so start-up and shutdown cancel out."""
    from concurrent.futures import ThreadPoolExecutor

    jobs = [(mode, arg, n) for mode, arg in servers for n in (FEW, MANY)]
    with ThreadPoolExecutor(2) as pool:  # two cores: two valgrinds at a time
        totals = pool.map(lambda j: _server_instructions(j[0], j[1], j[2], redis_url), jobs)
        counts = dict(zip(jobs, totals, strict=True))
    return {
        (mode, arg): (counts[(mode, arg, MANY)] - counts[(mode, arg, FEW)]) / COUNTED
        for mode, arg in servers
    }


def instructions(redis_url: str) -> None:
    """CPU instructions per request with and without the middleware, counted by callgrind
    in the real server process: the same for the same code whatever else the machine is
    doing. Each figure is the difference of two servers' totals (sent a few hundred requests
    and a few hundred more), so start-up and shutdown cancel out. It counts work, not time:
    system calls' time in the kernel and cache misses are not in it."""
    print(
        f"Instructions per request (callgrind, whole server process, {COUNTED} requests,"
        f" {CONNECTIONS} connections)"
    )
    modes = {
        "--serve": "bare FastAPI app",
        "--serve-frozen": "bare app, heap frozen",
        "--serve-suite": "suite's wiring",
        "--serve-prefetch": "bare app, prefetching",
    }
    counts = _per_request([(mode, arg) for mode in modes for arg in ("0", "1")], redis_url)
    for mode, title in modes.items():
        per = {p: counts[(mode, "1" if p else "0")] for p in (False, True)}
        print(
            f"  {title:<24} unprotected {per[False]:>9,.0f}  protected {per[True]:>9,.0f}"
            f"  (+{per[True] - per[False]:,.0f})  ratio {per[False] / per[True]:.3f}"
        )


STAGES = {
    "app": "bare FastAPI app",
    "layer": "+ a pure-ASGI layer passing requests on",
    "headers": "+ the two draft headers on every response",
    "local": "+ the limiter's own work (answered in-process)",
    "redis": "+ the decision from Redis (as deployed)",
}


def stage_app(stage: str, redis_url: str) -> Any:
    """The bare app with one more part of a protected request's cost at each stage
    (`STAGES`): `layer` a middleware that only passes the request on; `headers` one that
    also adds the limiter's two draft headers (the same values, made once); `local` the
    limiter's middleware deciding with a backend that answers at once (everything the
    middleware itself does); `redis` the limiter as `bare_app` has it."""
    from rate_limiter import Decision, Limit
    from rate_limiter.headers import limit_item
    from rate_limiter.middleware import RateLimitMiddleware, RouteRule, _adding_headers

    if stage in ("app", "redis"):
        return bare_app(stage == "redis", redis_url)
    app = bare_app(False, redis_url)
    rule = RouteRule(Limit.per_second(10**9), path="/ping")  # (bare_app's rule)
    decision = Decision(True, rule.limit.capacity, rule.limit.capacity - 1, 1e-9, 0.0)

    class Passing:
        def __init__(self, app: Any, headers: list[tuple[bytes, bytes]]) -> None:
            self.app, self.headers = app, headers

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if self.headers and scope["type"] == "http":
                send = _adding_headers(send, self.headers)
            await self.app(scope, receive, send)

    class Answering:
        name = "answering"

        async def acquire(self, key: str, limit: Limit, cost: int = 1) -> Decision:
            return decision

    if stage == "layer":
        app.add_middleware(Passing, headers=[])
    elif stage == "headers":
        current = limit_item(rule.quoted_name, decision).encode()
        app.add_middleware(
            Passing, headers=[(b"ratelimit-policy", rule.policy_bytes), (b"ratelimit", current)]
        )
    elif stage == "local":
        app.add_middleware(RateLimitMiddleware, rules=[rule], backend=Answering())
    else:
        raise SystemExit(f"unknown stage {stage!r}; one of {', '.join(STAGES)}")
    return app


def breakdown(redis_url: str) -> None:
    """Where a protected request's instructions go (BENCH_ONLY=breakdown): callgrind's count
    per request (as in `instructions`) at each stage of `STAGES`, each one's own share."""
    print(f"Where a protected request's instructions go (callgrind, {COUNTED} requests)")
    counts = _per_request([("--serve-stage", stage) for stage in STAGES], redis_url)
    previous = None
    for stage, title in STAGES.items():
        per = counts[("--serve-stage", stage)]
        step = "" if previous is None else f"  ({per - previous:+,.0f})"
        print(f"  {title:<48} {per:>9,.0f}{step}")
        previous = per


def _answers(port: int, timeout: float = 0.5) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return s.recv(12).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(sys.argv[2] == "1", int(sys.argv[3]), sys.argv[4])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-frozen":
        serve(sys.argv[2] == "1", int(sys.argv[3]), sys.argv[4], frozen=True)
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-prefetch":
        serve(sys.argv[2] == "1", int(sys.argv[3]), sys.argv[4], prefetch=True)
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-gc":
        serve_gc(sys.argv[2] == "1", int(sys.argv[3]), sys.argv[4])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-stage":
        _run(stage_app(sys.argv[2], sys.argv[4]), int(sys.argv[3]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-suite":
        serve_suite(sys.argv[2] == "1", int(sys.argv[3]), sys.argv[4])
        return
    from common.redis_server import RedisProcess

    started = time.perf_counter()
    url = os.environ.get("REDIS_URL")
    server = None if url else RedisProcess().start()
    url = url or (server.url if server else "")
    try:
        print(f"Redis: {url}")
        only = os.environ.get("BENCH_ONLY", "")
        if only in ("", "library"):
            asyncio.run(library(url))
        if only in ("", "middleware", "gc"):
            print(_pinning_note())
        with pinned(server):
            if only in ("", "middleware"):
                middleware(url, "--serve", "Middleware on a bare FastAPI app")
                middleware(url, "--serve-frozen", "The same bare app after gc.freeze()")
                middleware(
                    url,
                    "--serve-suite",
                    "Middleware in the suite's app wiring (common.build_app, access log on)",
                )
                middleware(
                    url,
                    "--serve-prefetch",
                    "Opt-in prefetching (PrefetchBackend: bound shifted by "
                    f"{PREFETCH_TTL * 1000:g} ms), bare app",
                )
            if only in ("", "middleware", "gc"):
                gc_work(url)
        if only in ("", "refunds"):
            asyncio.run(refund_flood(url))
        if only in ("", "middleware", "instructions", "breakdown"):
            if not shutil.which("valgrind"):
                print("Instructions per request: skipped (valgrind is not installed)")
            elif only == "breakdown":
                breakdown(url)
            else:
                instructions(url)
    finally:
        if server:
            server.stop()
    print(f"done in {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
