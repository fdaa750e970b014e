"""Which time slots of a series hold records: bounds, clock, gaps, late publication.

A slot exists when it lies between the series' first/last record, is not inside the day's gap
window (at most one seeded window per TAI day, clipped to that day), and is published: its time
is <= now - publication_lag, or <= now - publication_lag - late_delay for the seeded fraction of
slots that are published late. Counting is arithmetic over whole ranges (a loop over days for
gaps, enumeration only inside the short late-publication window).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from jsocsim.catalog import PrimeKey, Series

if TYPE_CHECKING:
    from jsocsim.records import RecordsConfig

DAY = 86400.0
_MASK = (1 << 64) - 1


def mix64(*values: int) -> int:
    """Deterministic 64-bit hash of integers (splitmix64 chain)."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (v & _MASK)) * 0xBF58476D1CE4E5B9 & _MASK
        h = (h ^ (h >> 31)) * 0x94D049BB133111EB & _MASK
        h ^= h >> 29
    return h


def unit(*values: int) -> float:
    """Deterministic uniform number in [0, 1) from integers."""
    return (mix64(*values) >> 11) / float(1 << 53)


def series_salt(name: str) -> int:
    return zlib.crc32(name.lower().encode())


def count_progression(lo: int, hi: int, stride: int, phase: int) -> int:
    """How many i in [lo, hi] have (i - phase) % stride == 0."""
    if hi < lo:
        return 0
    first = lo + (phase - lo) % stride
    return 0 if first > hi else (hi - first) // stride + 1


class SlotAvailability:
    """Existence of slots of one series' time key under a config and a clock."""

    def __init__(self, series: Series, config: RecordsConfig, clock: Callable[[], float]) -> None:
        self.series = series
        self.key: PrimeKey = series.time_key
        self.config = config
        self.clock = clock
        self.salt = series_salt(series.name)
        self.first_idx = math.ceil((series.first_record - self.key.epoch) / self.key.step - 1e-9)
        last = series.last_record
        self.last_idx = (
            None if last is None else math.floor((last - self.key.epoch) / self.key.step + 1e-9)
        )
        self.has_gaps = series.gaps and config.gap_day_fraction > 0
        self._window_cache: dict[int, tuple[int, int] | None] = {}

    def time_of(self, idx: int) -> float:
        return self.key.epoch + idx * self.key.step

    def _index_at_or_before(self, tai: float) -> int:
        return math.floor((tai - self.key.epoch) / self.key.step + 1e-9)

    def bounds(self) -> tuple[int, int, int]:
        """(first slot, last published slot, last slot published for the late ones too)."""
        now = self.clock() - self.config.publication_lag
        hi = self._index_at_or_before(now)
        if self.last_idx is not None:
            hi = min(hi, self.last_idx)
        settled = self._index_at_or_before(now - self.config.late_delay) if self._late_on() else hi
        return self.first_idx, hi, min(settled, hi)

    def _late_on(self) -> bool:
        return self.config.late_fraction > 0 and self.config.late_delay > 0

    def is_late(self, idx: int) -> bool:
        return unit(self.config.seed, self.salt, idx, 11) < self.config.late_fraction

    def gap_window(self, day: int) -> tuple[int, int] | None:
        """Slot-index interval [a, b] missing on TAI day `day`, or None."""
        if day in self._window_cache:
            return self._window_cache[day]
        cfg = self.config
        window = None
        if unit(cfg.seed, self.salt, day, 1) < cfg.gap_day_fraction:
            start = day * DAY + unit(cfg.seed, self.salt, day, 2) * DAY
            length = cfg.gap_min_seconds + unit(cfg.seed, self.salt, day, 3) * max(
                0.0, cfg.gap_max_seconds - cfg.gap_min_seconds
            )
            end = min(start + length, (day + 1) * DAY)
            a = math.ceil((start - self.key.epoch) / self.key.step - 1e-9)
            b = math.ceil((end - self.key.epoch) / self.key.step - 1e-9) - 1
            window = (a, b) if b >= a else None
        if len(self._window_cache) > 4096:
            self._window_cache.clear()
        self._window_cache[day] = window
        return window

    def in_gap(self, idx: int) -> bool:
        if not self.has_gaps:
            return False
        window = self.gap_window(math.floor(self.time_of(idx) / DAY))
        return window is not None and window[0] <= idx <= window[1]

    def exists(self, idx: int) -> bool:
        """Whether slot `idx` holds records now."""
        first, hi, settled = self.bounds()
        if idx < first or idx > hi or self.in_gap(idx):
            return False
        return idx <= settled or not self.is_late(idx)

    def _gapped(self, lo: int, hi: int, stride: int, phase: int) -> int:
        if not self.has_gaps or hi < lo:
            return 0
        total = 0
        for day in range(
            math.floor(self.time_of(lo) / DAY), math.floor(self.time_of(hi) / DAY) + 1
        ):
            window = self.gap_window(day)
            if window:
                total += count_progression(max(lo, window[0]), min(hi, window[1]), stride, phase)
        return total

    def count(self, lo: int, hi: int, stride: int = 1, phase: int | None = None) -> int:
        """Existing slots i in [lo, hi] with (i - phase) % stride == 0 (phase defaults to lo)."""
        phase = lo if phase is None else phase
        first, top, settled = self.bounds()
        lo, hi = max(lo, first), min(hi, top)
        if hi < lo:
            return 0
        mid = min(hi, settled)
        n = count_progression(lo, mid, stride, phase) - self._gapped(lo, mid, stride, phase)
        start = max(lo, mid + 1)
        start += (phase - start) % stride
        for idx in range(start, hi + 1, stride):
            n += not self.in_gap(idx) and not self.is_late(idx)
        return n

    def iter_from(
        self, lo: int, hi: int, stride: int = 1, phase: int | None = None, skip: int = 0
    ) -> Iterator[int]:
        """Existing slots in [lo, hi] on the progression, skipping the first `skip` of them."""
        phase = lo if phase is None else phase
        first, top, _ = self.bounds()
        lo, hi = max(lo, first), min(hi, top)
        lo += (phase - lo) % stride
        if skip:
            lo = self._seek(lo, hi, stride, phase, skip)
        for idx in range(lo, hi + 1, stride):
            if self.exists(idx):
                yield idx

    def _seek(self, lo: int, hi: int, stride: int, phase: int, skip: int) -> int:
        """Smallest progression index p >= lo with exactly `skip` existing slots in [lo, p)."""
        per_day = max(1, round(DAY / self.key.step))
        chunk = per_day * stride
        while lo <= hi:
            end = min(hi, lo + chunk - 1)
            n = self.count(lo, end, stride, phase)
            if n > skip:
                break
            skip -= n
            lo = end + 1 + (phase - end - 1) % stride
        for idx in range(lo, hi + 1, stride):
            if skip == 0 and self.exists(idx):
                return idx
            skip -= self.exists(idx)
        return hi + 1

    def first_existing(self) -> int | None:
        first, top, _ = self.bounds()
        return next(self.iter_from(first, top), None)

    def last_existing(self) -> int | None:
        first, top, _ = self.bounds()
        for idx in range(top, max(first, top - 10 * round(DAY / self.key.step)) - 1, -1):
            if self.exists(idx):
                return idx
        return None
