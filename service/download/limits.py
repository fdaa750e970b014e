"""Politeness and retry primitives: backoff with full jitter, Retry-After, circuit breakers.

These are process-local. Limits that must hold across workers (connections per host, pending
exports per email) are enforced by the database (host_slots / email_slots).
"""

from __future__ import annotations

import enum
import math
import random
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

Clock = Callable[[], float]


def backoff_delay(
    attempt: int, base: float = 1.0, cap: float = 300.0, rng: random.Random | None = None
) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**attempt)].

    `attempt` counts from 0 (the first retry). Negative attempts are treated as 0.
    """
    if base < 0 or cap < 0:
        raise ValueError(f"backoff base and cap must be >= 0, got base={base}, cap={cap}")
    exponent = min(max(attempt, 0), 62)  # 2**62 * base is beyond any cap; avoids overflow
    ceiling = min(cap, base * math.ldexp(1.0, exponent))
    return (rng or random).uniform(0.0, ceiling)


def retry_after_seconds(
    headers: Mapping[str, str], now: datetime | None = None
) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date); None if absent
    or unparseable. Dates in the past give 0."""
    value = headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, delta)


def retry_delay(
    attempt: int,
    *,
    retry_after: float | None = None,
    base: float = 1.0,
    cap: float = 300.0,
    rng: random.Random | None = None,
) -> float:
    """Delay before the next attempt: full-jitter backoff, but never less than what the server
    asked for (Retry-After or JSOC's `wait`)."""
    jittered = backoff_delay(attempt, base, cap, rng)
    if retry_after is None:
        return jittered
    return max(float(retry_after), jittered)


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Opens after `failure_threshold` consecutive failures; after `cooldown` seconds it is
    half-open: callers that gate on "not open" (StageContext.host_open) send work again, a
    success closes it, and a failure re-opens it for another cool-down (the failure count is
    kept until a success, so one failure is enough).
    """

    def __init__(
        self, failure_threshold: int = 5, cooldown: float = 30.0, clock: Clock = time.monotonic
    ) -> None:
        if failure_threshold < 1 or cooldown < 0:
            raise ValueError(
                f"failure_threshold must be >= 1 and cooldown >= 0, "
                f"got {failure_threshold} and {cooldown}"
            )
        self.failure_threshold = failure_threshold
        self.cooldown = cooldown
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at >= self.cooldown:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def retry_in(self) -> float:
        """Seconds until a request may be tried (0 when closed or half-open)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self.cooldown - self._clock())

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None

    def record_failure(self) -> None:
        self._failures += 1
        if self._failures >= self.failure_threshold:
            self._opened_at = self._clock()


class HostBreakers:
    """One CircuitBreaker per host, created on first use with shared settings."""

    def __init__(
        self, failure_threshold: int = 5, cooldown: float = 30.0, clock: Clock = time.monotonic
    ) -> None:
        self._make: Callable[[], CircuitBreaker] = lambda: CircuitBreaker(
            failure_threshold, cooldown, clock)
        self._breakers: dict[str, CircuitBreaker] = {}

    def for_host(self, host_or_url: str) -> CircuitBreaker:
        host = host_key(host_or_url)
        if host not in self._breakers:
            self._breakers[host] = self._make()
        return self._breakers[host]

    def states(self) -> dict[str, str]:
        """Host -> state name, for status reporting."""
        return {host: str(b.state) for host, b in self._breakers.items()}


def host_key(host_or_url: str) -> str:
    """`host[:port]` of a URL, or the argument itself (lower-cased) if it is not a URL."""
    if "://" in host_or_url:
        return urlsplit(host_or_url).netloc.lower()
    return host_or_url.lower()
