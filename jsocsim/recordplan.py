"""Turn a parsed SubsetQuery into slot ranges and positions; count and page arithmetically.

Time items follow docs/jsoc-protocol.md §6.3 (nearest slot with ties up for slotted keys, `a-b`
inclusive, `a/d` = max(1, floor(d/step)) slots, `@c` keeps every round(c/step)-th slot).
Non-slotted time keys (iris T_OBS, aia.response T_START) select grid times by value: `a-b`
inclusive, `a/d` half-open, a single value only on an exact grid time. FSN filters narrow the
slot span and are checked per record; where clauses and recnum filters are the engine's job.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from jsocsim.catalog import PrimeKey
from jsocsim.query import ENDPOINTS, SubsetQuery, ValueItem
from jsocsim.seriesmodel import SeriesModel
from jsocsim.timeslots import duration_slots, sample_stride, slot_index

MAX_EXPLODE = 1_000_000


@dataclass(frozen=True)
class SlotRange:
    lo: int
    hi: int
    stride: int = 1
    phase: int = 0

    def contains(self, idx: int) -> bool:
        return self.lo <= idx <= self.hi and (idx - self.phase) % self.stride == 0


def _slot_bound(model: SeriesModel, value: Any, upper: bool) -> int | None:
    """Slot index of a time-key value: ^/$ = first/last existing slot; rotation numbers are
    slot indices; slotted keys round to the nearest slot; grid keys take the grid time at or
    after (lower bound) / at or before (upper bound) the value."""
    key, avail = model.key, model.avail
    if value == "^":
        return avail.first_existing()
    if value == "$":
        return avail.last_existing()
    if key.numbered:
        return int(value)
    if key.slotted:
        return slot_index(value, key.epoch, key.step, key.round)
    pos: float = (value - key.epoch) / key.step
    return math.floor(pos + 1e-6) if upper else math.ceil(pos - 1e-6)


def _slot_hi(model: SeriesModel, item: ValueItem, lo: int) -> int | None:
    """Last slot of a value, range or duration item starting at slot `lo`."""
    key = model.key
    if item.kind == "value":
        if not (key.slotted or key.numbered) and item.start not in ENDPOINTS:
            pos = (item.start - key.epoch) / key.step
            return lo if abs(pos - round(pos)) <= 1e-6 else None
        return lo
    if item.kind == "range":
        return _slot_bound(model, item.end, True)
    if key.numbered:
        return lo + max(1, int(item.duration)) - 1
    if key.slotted:
        return lo + duration_slots(item.duration, key.step) - 1
    start = model.avail.time_of(lo) if item.start in ENDPOINTS else item.start
    return math.ceil((start + item.duration - key.epoch) / key.step - 1e-6) - 1


def _time_item_range(model: SeriesModel, item: ValueItem) -> SlotRange | None:
    key = model.key
    if item.kind in ("last", "first"):
        item = ValueItem("value", "$" if item.kind == "last" else "^")
    lo = _slot_bound(model, item.start, False)
    hi = None if lo is None else _slot_hi(model, item, lo)
    if lo is None or hi is None:
        return None
    stride = 1
    if item.sample:
        stride = max(1, round(item.sample)) if key.numbered else sample_stride(item.sample,
                                                                               key.step)
    return SlotRange(lo, hi, stride, lo) if hi >= lo else None


def resolve_endpoints(item: ValueItem, first: Any, last: Any) -> ValueItem:
    """The item with ^/$ (alone or as range ends) replaced by the first/last value."""
    ends = {"^": first, "$": last}
    if item.kind in ("first", "last"):
        return ValueItem("value", first if item.kind == "first" else last)
    start, end = ends.get(item.start, item.start), ends.get(item.end, item.end)
    return dataclasses.replace(item, start=start, end=end)


def merge_ranges(ranges: list[SlotRange]) -> list[SlotRange]:
    """Sorted, disjoint ranges with the same union (strided overlaps are enumerated)."""
    ranges = sorted(ranges, key=lambda r: (r.lo, r.hi))
    out: list[SlotRange] = []
    for r in ranges:
        prev = out[-1] if out else None
        if prev is None or r.lo > prev.hi + (1 if prev.stride == r.stride == 1 else 0):
            out.append(r)
        elif prev.stride == r.stride == 1:
            out[-1] = SlotRange(prev.lo, max(prev.hi, r.hi), 1, prev.lo)
        else:  # overlapping sampled ranges: spell the union out slot by slot
            span = range(prev.lo, max(prev.hi, r.hi) + 1)
            if len(span) > MAX_EXPLODE:
                raise ValueError("overlapping sampled ranges are too long to combine")
            out.pop()
            out.extend(SlotRange(i, i, 1, i) for i in span if prev.contains(i) or r.contains(i))
    return out


def _number_match(value: float, item: ValueItem, values: tuple[float, ...]) -> bool:
    item = resolve_endpoints(item, min(values), max(values))
    if item.kind == "value":
        return bool(value == item.start)
    hi_ok = value <= item.end if item.kind == "range" else value < item.start + item.duration
    on_step = item.sample is None or math.isclose(
        (value - item.start) % item.sample, 0.0, abs_tol=1e-9
    )
    return item.start <= value and hi_ok and on_step


def _interval(item: ValueItem, lo_all: int, hi_all: int) -> tuple[int, int]:
    item = resolve_endpoints(item, lo_all, hi_all)
    if item.kind == "value":
        return int(item.start), int(item.start)
    if item.kind == "range":
        return int(item.start), int(item.end)
    return int(item.start), int(item.start + item.duration) - 1


class SubsetPlan:
    """Selected slot ranges x positions (or HARPs) for one subset."""

    def __init__(self, model: SeriesModel, query: SubsetQuery) -> None:
        self.model, self.query = model, query
        self.fsn_key: PrimeKey | None = None
        self.fsn_intervals: list[tuple[int, int]] = []
        self.ranges = self._time_ranges()
        self.positions = self._positions()
        self._harps_cache: list[int] | None = None
        self.harp_items = next(
            (query.items_for(k) for k in model.series.primekeys if k.kind == "harp"), []
        )

    @property
    def harps(self) -> list[int]:
        """Selected HARPNUMs alive in the selected time ranges (computed on first use)."""
        if self._harps_cache is None:
            self._harps_cache = self._harps() if self.model.harps else []
        return self._harps_cache

    def _time_ranges(self) -> list[SlotRange]:
        model = self.model
        first, top, _ = model.avail.bounds()
        items = self.query.items_for(model.key)
        if items:
            ranges = [r for r in (_time_item_range(model, i) for i in items) if r is not None]
        else:
            ranges = [SlotRange(first, top, 1, first)]
        lo_cap, hi_cap = first, top
        for key in model.other_keys:
            if key.kind == "fsn" and self.query.items_for(key):
                self.fsn_key = key
                top_fsn = model.fsn_value(top, key.per_slot - 1, key)
                self.fsn_intervals = [
                    _interval(i, key.base, top_fsn) for i in self.query.items_for(key)
                ]
                lo_cap = max(
                    lo_cap,
                    first + (min(a for a, _ in self.fsn_intervals) - key.base) // key.per_slot,
                )
                hi_cap = min(
                    hi_cap,
                    first + (max(b for _, b in self.fsn_intervals) - key.base) // key.per_slot,
                )
        clipped = []
        for r in merge_ranges(ranges):
            lo, hi = max(r.lo, lo_cap), min(r.hi, hi_cap)
            if hi >= lo:
                clipped.append(SlotRange(lo, hi, r.stride, r.phase))
        return clipped

    def _positions(self) -> list[int]:
        digit_lists = []
        for key, radix in zip(self.model.other_keys, self.model.radices, strict=False):
            items = self.query.items_for(key)
            if key.kind == "fsn" or not items:
                digit_lists.append(list(range(radix)))
            else:
                digit_lists.append(
                    [
                        i
                        for i, v in enumerate(key.values)
                        if any(
                            _number_match(v, it, key.values)
                            if not isinstance(v, str)
                            else v == resolve_endpoints(it, key.values[0], key.values[-1]).start
                            for it in items
                        )
                    ]
                )
        if self.model.versioned:
            digit_lists.append([0, 1])
        return [self.model.position_of(list(d)) for d in itertools.product(*digit_lists)]

    def _harps(self) -> list[int]:
        model = self.model
        assert model.harps is not None
        if not self.ranges:
            return []
        lo, hi = self.ranges[0].lo, max(r.hi for r in self.ranges)
        if not self.harp_items:
            return model.harps.alive_between(model.avail.time_of(lo), model.avail.time_of(hi))
        kmax = model.harps.last_born(model.avail.time_of(model.avail.bounds()[1]))
        chosen: set[int] = set()
        for item in self.harp_items:
            a, b = _interval(item, 1, kmax)
            chosen.update(range(max(a, 1), min(b, kmax) + 1))
        alive = []
        for k in sorted(chosen):
            klo, khi = model.harp_slots(k)
            if klo <= hi and khi >= lo:
                alive.append(k)
        return alive

    @property
    def needs_check(self) -> bool:
        """True when records must be checked one by one (FSN filter, record versions)."""
        return self.fsn_key is not None or self.model.versioned

    def fsn_ok(self, fsn: int) -> bool:
        return any(a <= fsn <= b for a, b in self.fsn_intervals)

    def _harp_pieces(self, k: int) -> Iterator[SlotRange]:
        hlo, hhi = self.model.harp_slots(k)
        for r in self.ranges:
            lo, hi = max(r.lo, hlo), min(r.hi, hhi)
            if hi >= lo:
                yield SlotRange(lo, hi, r.stride, r.phase)

    def count(self) -> int:
        """Records selected, before per-record checks."""
        avail = self.model.avail
        if self.model.harps:
            return sum(
                avail.count(p.lo, p.hi, p.stride, p.phase)
                for k in self.harps
                for p in self._harp_pieces(k)
            )
        per_slot = len(self.positions)
        return per_slot * sum(avail.count(r.lo, r.hi, r.stride, r.phase) for r in self.ranges)

    def iterate(self, skip: int = 0) -> Iterator[tuple[int, int]]:
        """(slot, position) in prime-key order, skipping the first `skip` (arithmetically)."""
        avail = self.model.avail
        if self.model.harps:
            for k in self.harps:
                for p in self._harp_pieces(k):
                    if skip:
                        n = avail.count(p.lo, p.hi, p.stride, p.phase)
                        if skip >= n:
                            skip -= n
                            continue
                    for slot in avail.iter_from(p.lo, p.hi, p.stride, p.phase, skip):
                        yield slot, k
                    skip = 0
            return
        per_slot = len(self.positions)
        if not per_slot:
            return
        for r in self.ranges:
            if skip:
                n = avail.count(r.lo, r.hi, r.stride, r.phase) * per_slot
                if skip >= n:
                    skip -= n
                    continue
            slot_skip, pos_skip = divmod(skip, per_slot)
            skip = 0
            for slot in avail.iter_from(r.lo, r.hi, r.stride, r.phase, slot_skip):
                for pos in self.positions[pos_skip:]:
                    yield slot, pos
                pos_skip = 0

    def contains(self, slot: int, position: int) -> bool:
        """Whether (slot, position) is selected by the key filters (existence not checked)."""
        if not any(r.contains(slot) for r in self.ranges):
            return False
        if self.model.harps:
            return not self.harp_items or position in self.harps
        return position in self.positions
