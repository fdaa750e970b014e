"""Seeded, reproducible fault decisions.

A decision is a pure function of (seed, kind, key, n) where n counts how often that (kind, key)
was asked before, so the same sequence of requests sees the same faults in every run, and a
retried request gets a fresh roll instead of the same answer forever.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from jsocsim.config import FaultConfig

# kind -> FaultConfig field holding its rate
RATE_FIELDS = {
    "cgi_error": "cgi_error_rate",
    "slow": "slow_rate",
    "reset": "reset_rate",
    "truncate": "truncate_rate",
    "ignore_range": "ignore_range_rate",
    "changing_file": "changing_file_rate",
    "export_fail": "export_fail_rate",
    "export_stuck": "export_stuck_rate",
}


def uniform(seed: int, *parts: object) -> float:
    """A deterministic number in [0, 1) from the seed and parts."""
    text = "\x1f".join([str(seed), *map(str, parts)])
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


class Faults:
    """Answers "does fault X happen now?" for the handlers.

    `clock` is the SimClock (TAI seconds); outage windows are measured on it from the moment
    the fault configuration was last set.
    """

    def __init__(self, config: FaultConfig, clock: Callable[[], float],
                 records_config: Any = None) -> None:
        self._clock = clock
        self._records_config = records_config  # receives offline_rate as offline_fraction
        self.config = config
        self.set_at = clock()
        self._counts: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.fired: defaultdict[str, int] = defaultdict(int)
        self._changed: set[str] = set()

    def update(self, **changes: Any) -> FaultConfig:
        """Apply `changes` (FaultConfig field names); restarts outage windows and roll counters."""
        self.config = self.config.updated(**changes)
        self.set_at = self._clock()
        self._counts.clear()
        if "offline_rate" in changes:
            self.apply_offline_rate()
        return self.config

    def apply_offline_rate(self) -> None:
        """Offline data is decided by records.py: hand it the configured fraction."""
        if self._records_config is not None:
            self._records_config.offline_fraction = self.config.offline_rate

    def replace(self, config: FaultConfig) -> None:
        """Install a whole new FaultConfig."""
        config.validate()
        self.config = config
        self.set_at = self._clock()
        self._counts.clear()

    def rate(self, kind: str) -> float:
        """The configured rate of `kind` (see RATE_FIELDS)."""
        try:
            return float(getattr(self.config, RATE_FIELDS[kind]))
        except KeyError:
            raise ValueError(f"unknown fault kind {kind!r}; known: {sorted(RATE_FIELDS)}") from None

    def roll(self, kind: str, key: str) -> bool:
        """True if fault `kind` hits this occurrence of `key` (e.g. a URL path or request id)."""
        rate = self.rate(kind)
        if rate <= 0.0:
            return False
        n = self._counts[(kind, key)]
        self._counts[(kind, key)] = n + 1
        hit = rate >= 1.0 or uniform(self.config.seed, kind, key, n) < rate
        if hit:
            self.fired[kind] += 1
        return hit

    def in_outage(self, now: float | None = None) -> bool:
        """True while the clock is inside an outage window."""
        elapsed = (self._clock() if now is None else now) - self.set_at
        windows = list(self.config.outages)
        if self.config.outage_seconds > 0:
            windows.append((0.0, self.config.outage_seconds))
        return any(start <= elapsed < start + duration for start, duration in windows)

    def outage_remaining(self, now: float | None = None) -> float:
        """Seconds until the current outage window ends (0 outside outages)."""
        elapsed = (self._clock() if now is None else now) - self.set_at
        windows = list(self.config.outages)
        if self.config.outage_seconds > 0:
            windows.append((0.0, self.config.outage_seconds))
        ends = [s + d - elapsed for s, d in windows if s <= elapsed < s + d]
        return max(ends, default=0.0)

    def should_change_file(self, url_path: str) -> bool:
        """True once per path: listed in changing_files, or picked by changing_file_rate."""
        if url_path in self._changed:
            return False
        listed = url_path in self.config.changing_files
        if listed or self.roll("changing_file", url_path):
            self._changed.add(url_path)
            self.fired["changing_file"] += int(listed)
            return True
        return False

    def summary(self) -> dict[str, Any]:
        """The configuration, how often each fault fired, and whether an outage is on."""
        return {"config": self.config.as_dict(), "fired": dict(self.fired),
                "in_outage": self.in_outage()}
