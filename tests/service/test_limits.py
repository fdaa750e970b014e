"""Backoff, Retry-After and circuit breakers."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from service.download.limits import (
    BreakerState,
    CircuitBreaker,
    HostBreakers,
    backoff_delay,
    host_key,
    retry_after_seconds,
    retry_delay,
)


@pytest.mark.unit
def test_full_jitter_stays_within_bounds_and_spreads() -> None:
    rng = random.Random(42)
    base, cap = 0.5, 20.0
    for attempt in range(12):
        ceiling = min(cap, base * 2**attempt)
        samples = [backoff_delay(attempt, base, cap, rng) for _ in range(400)]
        assert all(0.0 <= s <= ceiling for s in samples)
        # full jitter: spread over the whole interval, not clustered at the top
        assert min(samples) < 0.1 * ceiling and max(samples) > 0.9 * ceiling
    assert backoff_delay(10_000, 1.0, 5.0, rng) <= 5.0  # no overflow for huge attempts
    with pytest.raises(ValueError, match="must be >= 0"):
        backoff_delay(1, -1.0, 5.0)


@pytest.mark.unit
def test_retry_delay_never_undercuts_the_server() -> None:
    rng = random.Random(1)
    assert all(retry_delay(0, retry_after=30.0, base=1.0, cap=4.0, rng=rng) == 30.0
               for _ in range(50))
    assert all(0 <= retry_delay(3, base=1.0, cap=4.0, rng=rng) <= 4.0 for _ in range(50))


@pytest.mark.unit
def test_retry_after_parsing() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds({"Retry-After": "120"}) == 120.0
    assert retry_after_seconds({"Retry-After": " 0 "}) == 0.0
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert retry_after_seconds({"Retry-After": later}, now=now) == pytest.approx(90.0)
    earlier = format_datetime(now - timedelta(hours=1), usegmt=True)
    assert retry_after_seconds({"Retry-After": earlier}, now=now) == 0.0
    assert retry_after_seconds({}) is None
    assert retry_after_seconds({"Retry-After": "soon"}) is None
    assert retry_after_seconds({"Retry-After": "-5"}) is None


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.unit
def test_breaker_transitions() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=3, cooldown=60.0, clock=clock)
    assert breaker.state is BreakerState.CLOSED and breaker.retry_in() == 0.0
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # a success resets the count
    assert breaker.consecutive_failures == 0
    for _ in range(3):
        breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert breaker.retry_in() == 60.0
    clock.now += 59.0
    assert breaker.state is BreakerState.OPEN and breaker.retry_in() == pytest.approx(1.0)
    clock.now += 1.0
    assert breaker.state is BreakerState.HALF_OPEN and breaker.retry_in() == 0.0
    breaker.record_failure()  # one failure after the cool-down: open again for a full one
    assert breaker.state is BreakerState.OPEN and breaker.retry_in() == 60.0
    clock.now += 60.0
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED and breaker.consecutive_failures == 0


@pytest.mark.unit
def test_breakers_are_per_host() -> None:
    clock = FakeClock()
    breakers = HostBreakers(failure_threshold=1, cooldown=10.0, clock=clock)
    breakers.for_host("http://JSOC.example:80/SUM1/x").record_failure()
    assert breakers.for_host("jsoc.example:80").state is BreakerState.OPEN
    assert breakers.for_host("http://other:80/").state is BreakerState.CLOSED
    assert breakers.states() == {"jsoc.example:80": "open", "other:80": "closed"}
    assert host_key("http://a:1/b?c") == "a:1"
