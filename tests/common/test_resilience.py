import pytest

from common.resilience import CircuitBreaker, retry


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_probes_once_per_period_and_closes() -> None:
    clock = Clock()
    breaker = CircuitBreaker(reset_after=1.0, clock=clock)
    assert breaker.allow() and not breaker.is_open
    assert breaker.failure() is True  # the outage began
    assert breaker.failure() is False
    assert not breaker.allow()
    clock.now += 1.0
    assert breaker.allow()  # one probe
    assert not breaker.allow()  # and only one
    assert breaker.success() is True  # recovered
    assert breaker.allow() and breaker.success() is False


async def test_retry_retries_then_gives_up() -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError("nope")
        return "ok"

    assert await retry(flaky, attempts=3, base=0.001) == "ok"
    calls = -10
    with pytest.raises(ConnectionError):
        await retry(flaky, attempts=2, base=0.001)
    with pytest.raises(ValueError):
        await retry(lambda: _raise(ValueError()), attempts=3, retry_on=(ConnectionError,))


async def _raise(exc: Exception) -> None:
    raise exc
