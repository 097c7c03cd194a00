"""The algorithms on a clock the test controls (the in-memory backend runs them directly)."""

from __future__ import annotations

import math

import pytest

from rate_limiter import Algorithm, Limit, MemoryBackend
from rate_limiter.algorithms import US, Decision, decision_from_reply


class Clock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = round(start * US)

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += round(seconds * US)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def backend(clock: Clock) -> MemoryBackend:
    return MemoryBackend(clock=clock)


def take(backend: MemoryBackend, limit: Limit, n: int, key: str = "k", cost: int = 1) -> int:
    return sum(backend.acquire_sync(key, limit, cost).allowed for _ in range(n))


def test_gcra_burst_then_steady_refill(backend: MemoryBackend, clock: Clock) -> None:
    limit = Limit(10, 1.0, Algorithm.GCRA, burst=5)
    assert take(backend, limit, 8) == 5
    refused = backend.acquire_sync("k", limit)
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(0.1)
    clock.advance(0.099)
    assert not backend.acquire_sync("k", limit).allowed
    clock.advance(0.001)
    assert backend.acquire_sync("k", limit).allowed
    # Steady state: exactly one every 100 ms.
    admitted = 0
    for _ in range(100):
        clock.advance(0.01)
        admitted += backend.acquire_sync("k", limit).allowed
    assert admitted == 10
    clock.advance(10)
    assert backend.acquire_sync("k", limit, 0).remaining == 5


def test_gcra_reports_remaining_and_reset(backend: MemoryBackend) -> None:
    limit = Limit.per_second(4)
    d = backend.acquire_sync("k", limit, 3)
    assert (d.allowed, d.limit, d.remaining) == (True, 4, 1)
    assert d.reset_after == pytest.approx(0.75)
    assert d.retry_after == 0


@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_cost_above_capacity_is_refused_never_admitted(
    backend: MemoryBackend, algorithm: Algorithm
) -> None:
    limit = Limit(5, 60, algorithm)
    d = backend.acquire_sync("k", limit, 6)
    assert not d.allowed and math.isinf(d.retry_after)
    assert backend.acquire_sync("k", limit, 5).allowed


def test_fixed_window_boundary(backend: MemoryBackend, clock: Clock) -> None:
    limit = Limit(3, 1.0, Algorithm.FIXED_WINDOW)
    clock.now = (clock.now // US + 1) * US - 10_000  # 10 ms before a window ends
    assert take(backend, limit, 5) == 3
    d = backend.acquire_sync("k", limit)
    assert d.retry_after == pytest.approx(0.01)
    clock.advance(0.01)  # the next window: a fresh count (the known double-burst)
    assert take(backend, limit, 5) == 3


def test_sliding_window_weighs_the_previous_window(backend: MemoryBackend, clock: Clock) -> None:
    limit = Limit(10, 1.0, Algorithm.SLIDING_WINDOW)
    clock.now = (clock.now // US) * US
    assert take(backend, limit, 10) == 10
    clock.advance(1.25)  # previous window weighs 75% -> 7.5 used
    assert take(backend, limit, 5) == 2
    d = backend.acquire_sync("k", limit)
    assert not d.allowed
    # 2 + 10 * (1 - f) + 1 <= 10  ->  f >= 0.3, i.e. 50 ms from now
    assert d.retry_after == pytest.approx(0.05)
    clock.advance(0.05)
    assert backend.acquire_sync("k", limit).allowed


def test_sliding_log_is_exact_over_any_window(backend: MemoryBackend, clock: Clock) -> None:
    limit = Limit(4, 1.0, Algorithm.SLIDING_LOG)
    for _ in range(4):
        assert backend.acquire_sync("k", limit).allowed
        clock.advance(0.2)
    d = backend.acquire_sync("k", limit)  # t=0.8: the first entry leaves at t=1.0
    assert not d.allowed and d.retry_after == pytest.approx(0.2)
    clock.advance(0.2)
    assert backend.acquire_sync("k", limit).allowed
    assert not backend.acquire_sync("k", limit).allowed


def test_concurrency_leases_release_and_expire(backend: MemoryBackend, clock: Clock) -> None:
    limit = Limit(2, 30, Algorithm.CONCURRENCY)
    a = backend.acquire_sync("k", limit)
    b = backend.acquire_sync("k", limit, 1)
    assert a.lease and b.lease and a.lease != b.lease
    c = backend.acquire_sync("k", limit)
    # (a slot frees when a holder releases it: retry in a second, not at the expiry in 30)
    assert not c.allowed and c.retry_after == pytest.approx(1)
    backend.release_sync("k", limit, a.lease)
    assert backend.acquire_sync("k", limit).allowed
    assert not backend.acquire_sync("k", limit).allowed
    clock.advance(30)  # the holders "died": their leases expire
    assert backend.acquire_sync("k", limit, 2).allowed


@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_refused_requests_do_not_count_unless_asked(
    backend: MemoryBackend, clock: Clock, algorithm: Algorithm
) -> None:
    lenient = Limit(3, 1.0, algorithm)
    assert take(backend, lenient, 3, key="a") == 3
    before = backend.acquire_sync("a", lenient, 0)
    take(backend, lenient, 10, key="a")
    after = backend.acquire_sync("a", lenient, 0)
    assert after.reset_after <= before.reset_after
    if algorithm is Algorithm.CONCURRENCY:
        return  # refused leases never count
    strict = Limit(3, 1.0, algorithm, count_refused=True)
    clock.now = (clock.now // US) * US + 100_000
    assert take(backend, strict, 2, key="b") == 2
    assert take(backend, strict, 1, key="b", cost=2) == 0  # refused, but it used the last unit
    assert backend.acquire_sync("b", strict, 0).remaining == 0


@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_changing_the_limit_keeps_what_was_consumed(
    backend: MemoryBackend, algorithm: Algorithm
) -> None:
    assert take(backend, Limit(10, 3600, algorithm), 6) == 6
    # Raised: the 6 already used still count.
    assert take(backend, Limit(20, 3600, algorithm), 30) == 14
    # Lowered below what was used: nothing more until it drains.
    assert not backend.acquire_sync("k", Limit(5, 3600, algorithm)).allowed


def test_peek_consumes_nothing(backend: MemoryBackend) -> None:
    limit = Limit.per_minute(3)
    for _ in range(5):
        assert backend.acquire_sync("k", limit, 0).remaining == 3
    assert take(backend, limit, 5) == 3


def test_limit_validation() -> None:
    with pytest.raises(ValueError):
        Limit(0)
    with pytest.raises(ValueError):
        Limit(1, 0)
    with pytest.raises(ValueError):
        Limit(1, 1, burst=0)
    # The algorithms with one entry per unit are bounded: one call of cost 100,000 would keep
    # Redis busy for half a second.
    with pytest.raises(ValueError, match="sliding_log keeps one entry per unit: at most 10000"):
        Limit(10_001, 60, Algorithm.SLIDING_LOG)
    with pytest.raises(ValueError, match="concurrency keeps one entry per unit"):
        Limit(10_001, 60, Algorithm.CONCURRENCY)
    assert Limit(10_000, 60, Algorithm.CONCURRENCY).rate == 10_000
    assert Limit(10_001, 60, Algorithm.SLIDING_WINDOW).rate == 10_001
    with pytest.raises(ValueError, match="at most 4294967295"):
        Limit(2**32)
    with pytest.raises(ValueError, match="prefetch applies to the gcra"):
        Limit(1, 1, Algorithm.FIXED_WINDOW, prefetch=True)
    assert Limit(1, 1, Algorithm.FIXED_WINDOW, prefetch=False).prefetch is False
    assert Algorithm.parse("token-bucket") is Algorithm.GCRA
    assert Limit.per("minute", 5).period == 60
    assert Limit(5, burst=9).capacity == 9
    assert Limit(5, algorithm=Algorithm.FIXED_WINDOW, burst=9).capacity == 5


def test_memory_backend_sweeps_expired_keys(clock: Clock) -> None:
    backend = MemoryBackend(clock=clock)
    limit = Limit.per_second(5)
    for i in range(100):
        backend.acquire_sync(f"k{i}", limit)
    assert len(backend) == 100
    clock.advance(10)
    for _ in range(4096):
        backend.acquire_sync("hot", limit)
    assert len(backend) == 1


@pytest.mark.parametrize(
    "raw",
    [
        [1, 10, 9, 100_000, 0, 1_700_000_000_000_000, 12],
        [0, 10, 0, 1_000_000, 250_000, 1, 0],
        [0, 5, -3, 0, -1, 0, 0],  # never fits; a negative remaining shows as 0
        [1, 10**9, 10**9 - 1, 1, 0, 2**53, 2**40],
    ],
)
def test_the_hot_path_builds_the_same_decision_as_from_us(raw: list[int]) -> None:
    fast = decision_from_reply(raw)
    assert fast == Decision.from_us(*raw)
    assert type(fast) is Decision and type(fast.allowed) is bool
