from common.resilience import CircuitBreaker
from tests.support import ManualClock as Clock


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
