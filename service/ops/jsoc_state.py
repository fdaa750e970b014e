"""Is JSOC reachable? Learned from the real CGI calls of this process (workers and API), with
a cheap probe by ``/ready`` when nothing asked JSOC recently or the last call failed.

A call that got an answer from JSOC (any JSON reply, whatever its status, or an HTTP 4xx)
means reachable; a timeout, a refused connection, an HTTP 5xx or a reply that is not JSON is a
failure. JSOC is ``down`` after DOWN_AFTER failures in a row, or at once when a probe fails;
``since`` is then the first of those failures. The state is per JSOC base URL, per process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, TypedDict

State = Literal["up", "down", "unknown"]
DOWN_AFTER = 3


@dataclass
class Reachability:
    """What the last calls to one JSOC server said."""

    state: State = "unknown"
    since: datetime | None = None  # when the current state began (first failure when down)
    last_ok_at: datetime | None = None
    last_error: str | None = None
    failures: int = 0  # in a row
    failing_since: datetime | None = None
    checked_at: float = float("-inf")  # monotonic time of the last call or probe

    def as_dict(self) -> ReachabilityFields:
        return {"state": self.state, "since": _iso(self.since),
                "last_ok_at": _iso(self.last_ok_at), "last_error": self.last_error}


class ReachabilityFields(TypedDict):
    """``Reachability.as_dict()``: the state and its times as ISO 8601 text."""

    state: State
    since: str | None
    last_ok_at: str | None
    last_error: str | None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


_SERVERS: dict[str, Reachability] = {}


def reachability(base_url: str) -> Reachability:
    """The state of one JSOC server (``unknown`` before any call)."""
    return _SERVERS.setdefault(base_url.rstrip("/") + "/", Reachability())


def record_ok(base_url: str) -> None:
    """JSOC answered a call."""
    r = reachability(base_url)
    now = datetime.now(UTC)
    if r.state != "up":
        r.state, r.since = "up", now
    r.last_ok_at, r.checked_at = now, time.monotonic()
    r.failures, r.failing_since = 0, None


def record_unreachable(base_url: str, error: str, *, definitive: bool = False) -> None:
    """A call got no usable answer (timeout, connection error, 5xx, not JSON); ``definitive``
    for a probe, whose failure alone means down."""
    r = reachability(base_url)
    now = datetime.now(UTC)
    r.failures += 1
    r.failing_since = r.failing_since or now
    if r.state != "down" and (definitive or r.failures >= DOWN_AFTER):
        r.state, r.since = "down", r.failing_since
    r.last_error, r.checked_at = error[:300], time.monotonic()


def needs_probe(base_url: str, max_age: float) -> bool:
    """True when no call told us anything in the last ``max_age`` seconds, or the last call
    failed without JSOC being known down yet."""
    r = reachability(base_url)
    return (time.monotonic() - r.checked_at > max_age
            or (r.failures > 0 and r.state != "down"))
