"""A job's slots: the time key's grid and the job's sampled slots on it.

One timeline serves the chunk planner, the plan cursor, the splitter and follow mode. A slot's
index and time follow docs/jsoc-protocol.md §6.3; a job selects the slots nearest its
``start`` and ``end`` and every ``stride``-th one between (its cadence). A time key without
slots (by value) gets a 1 s grid starting at the job's start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from service.jobspec import JobSpec, SpecError
from service.jsoc.metadata import PrimeKeyInfo, SeriesMeta
from service.timeutil import (
    cadence_stride,
    duration_range_slots,
    interval_slots,
    parse_time,
    slot_index,
    slot_time,
    step_seconds,
)


@dataclass(frozen=True)
class SlotGrid:
    """The time key's slots: epoch (TAI s), step (s), and ``round_`` for ts_slot keys."""

    epoch: float
    step: float
    round_: float | None = None

    def time(self, idx: int) -> float:
        """TAI seconds of slot ``idx``."""
        return slot_time(idx, self.epoch, self.step)

    def index(self, tai: float) -> int:
        """The slot a time falls in."""
        return slot_index(tai, self.epoch, self.step, self.round_)


def _raw_keyword(meta: SeriesMeta, name: str) -> dict[str, Any]:
    for kw in meta.raw.get("keywords") or []:
        if isinstance(kw, dict) and str(kw.get("name", "")).lower() == name.lower():
            return kw
    return {}


def slot_grid(meta: SeriesMeta, key: PrimeKeyInfo, start: float) -> SlotGrid:
    """The key's grid; a key without slots gets a 1 s grid starting at ``start`` (by value).
    A ts_slot key rounds by its ``<key>_round`` default (absent: 0)."""
    if not (key.slotted and key.step):
        return SlotGrid(epoch=start, step=1.0, round_=0.0)
    epoch = parse_time(key.epoch) if key.epoch else 0.0
    round_ = None
    if str(_raw_keyword(meta, key.name).get("recscope", "")).lower() == "ts_slot":
        round_ = step_seconds(_raw_keyword(meta, f"{key.name}_round").get("defval")) or 0.0
    return SlotGrid(epoch=epoch, step=float(key.step), round_=round_)


@dataclass(frozen=True)
class Timeline:
    """A job's sampled slots: the time key's grid, the first sampled slot and the stride."""

    grid: SlotGrid
    first: int
    stride: int
    offset: float  # spec start minus the first slot's time

    def time(self, idx: int) -> float:
        return self.grid.time(idx)

    def index(self, tai: float) -> int:
        return self.grid.index(tai)

    def sampled_from(self, idx: int) -> int:
        """The first sampled slot at or after ``idx``."""
        if idx <= self.first:
            return self.first
        return self.first + math.ceil((idx - self.first) / self.stride) * self.stride

    def until(self, end: int) -> float:
        """The ``until`` time whose job range ends just before slot ``end``."""
        return self.time(end) + self.offset

    def slot_of(self, text: str | None, default: int) -> int:
        """The slot of a JSOC time string (``default`` when there is none)."""
        return default if text is None else self.index(parse_time(text))


def timeline(spec: JobSpec, meta: SeriesMeta) -> Timeline:
    """The job's timeline (SpecError without a time prime key or a start)."""
    key = meta.time_key()
    if key is None or spec.start_tai is None:
        raise SpecError(["planning needs a time prime key and start"])
    grid = slot_grid(meta, key, spec.start_tai)
    first = grid.index(spec.start_tai)
    return Timeline(grid, first, cadence_stride(spec.cadence_seconds, grid.step),
                    spec.start_tai - grid.time(first))


def job_slots(spec: JobSpec, meta: SeriesMeta, until: float | None = None) -> range:
    """Sampled slot indices of the job, in order: the slots nearest ``start`` and ``end`` and
    every sampled one between, both ends included (JSOC's ``a-b``, as sunpy selects them). A
    follow job has no end: its range stops before ``until`` (TAI seconds, excluded)."""
    key, start = meta.time_key(), spec.start_tai
    end = spec.end_tai if spec.end is not None else until
    if key is None or start is None or end is None:
        raise SpecError(["planning needs a time prime key, start, and end (or until for follow)"])
    grid = slot_grid(meta, key, start)
    if spec.end is not None:
        if end < start:
            return range(0)
        return interval_slots(start, end, grid.epoch, grid.step, grid.round_,
                              spec.cadence_seconds)
    if end <= start:
        return range(0)
    return duration_range_slots(start, end - start, grid.epoch, grid.step, grid.round_,
                                spec.cadence_seconds)


def remaining(whole: range, first_slot: int) -> range:
    """The sampled slots of ``whole`` at or after slot ``first_slot``."""
    if first_slot <= whole.start:
        return whole
    return whole[-(-(first_slot - whole.start) // whole.step):]


def by_value_end(spec: JobSpec, key: PrimeKeyInfo) -> float | None:
    """A bounded job on a time key without slots: its end (chunks are cut on a 1 s grid and
    the last one stops just after it); None otherwise."""
    return spec.end_tai if spec.end is not None and not (key.slotted and key.step) else None
