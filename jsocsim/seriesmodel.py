"""Per-series record grid: prime-key values <-> (slot, position) <-> record ordinal r.

Two layouts cover every catalog series:
* time-first (T_REC, then value keys / FSN): position = mixed-radix index of the other keys'
  value indices (first key most significant), r = (slot - first_slot) * n_positions + position.
* HARP (HARPNUM, T_REC): position = HARPNUM; r = (slot - first_slot) * width + HARPNUM % width.
  HARPs are born at seeded times about every `interval` seconds and live min..max days, so at
  most `width` of them are alive at once and HARPNUM is recoverable from its residue.
recnum = recnum_base + r; sunum = sunum_base + r // unitsize; SU slot = r % unitsize.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from jsocsim.availability import SlotAvailability, series_salt, unit
from jsocsim.catalog import PrimeKey, Series
from jsocsim.keygen import observer_of
from jsocsim.timeslots import parse_time

if TYPE_CHECKING:
    from jsocsim.records import RecordsConfig

DAY = 86400.0


class HarpModel:
    """Seeded HARP births and lifetimes."""

    def __init__(self, params: dict[str, Any], seed: int, salt: int) -> None:
        self.first = parse_time(str(params["first_birth"]))
        self.interval = float(params["interval"])
        self.min_life = float(params["min_life_days"]) * DAY
        self.max_life = float(params["max_life_days"]) * DAY
        self.width = int(params["width"])
        self.seed, self.salt = seed, salt

    def birth(self, k: int) -> float:
        return self.first + (k - 1 + 0.9 * unit(self.seed, self.salt, k, 31)) * self.interval

    def death(self, k: int) -> float:
        life = self.min_life + unit(self.seed, self.salt, k, 32) * (self.max_life - self.min_life)
        return self.birth(k) + life

    def last_born(self, tai: float) -> int:
        """Highest HARPNUM born at or before `tai` (0 if none)."""
        k = math.floor((tai - self.first) / self.interval) + 1
        while k > 0 and self.birth(k) > tai:
            k -= 1
        return max(k, 0)

    def alive_between(self, t0: float, t1: float) -> list[int]:
        """HARPNUMs alive at some time in [t0, t1], ascending."""
        k_lo = max(1, math.floor((t0 - self.max_life - self.first) / self.interval))
        return [k for k in range(k_lo, self.last_born(t1) + 1) if self.death(k) >= t0]


class SeriesModel:
    """Grid, identity and availability of one series."""

    def __init__(self, series: Series, config: RecordsConfig, clock: Callable[[], float]) -> None:
        self.series = series
        self.key: PrimeKey = series.time_key
        self.avail = SlotAvailability(series, config, clock)
        self.salt = series_salt(series.name)
        # series of one HARP family (sharp, sharp_cea, Mharp, Bharp) share their HARPs
        family = series_salt(str(series.harp.get("family", series.name)))
        self.harps = HarpModel(series.harp, config.seed, family) if series.harp else None
        self.other_keys = [k for k in series.primekeys if not k.is_time and k.kind != "harp"]
        self.radices = [k.per_slot if k.kind == "fsn" else len(k.values) for k in self.other_keys]
        # reprocessed series: a last, hidden digit is the version (0 original, 1 reprocessed)
        self.versioned = bool(series.reprocessed) and not self.harps
        self.seed = config.seed
        if self.versioned:
            self.radices.append(2)
        self.n_positions = math.prod(self.radices) if self.radices else 1
        self.width = self.harps.width if self.harps else self.n_positions
        self.observer = observer_of(series.keywords)  # vantage of CRLT_OBS, DSUN_OBS...

    @property
    def first_idx(self) -> int:
        return self.avail.first_idx

    # --- positions ---------------------------------------------------------------------------
    def digits(self, position: int) -> list[int]:
        out = []
        for radix in reversed(self.radices):
            position, d = divmod(position, radix)
            out.append(d)
        return out[::-1]

    def position_of(self, digits: list[int]) -> int:
        pos = 0
        for d, radix in zip(digits, self.radices, strict=True):
            pos = pos * radix + d
        return pos

    def fsn_value(self, slot: int, digit: int, key: PrimeKey | None = None) -> int:
        key = key or next(k for k in self.other_keys if k.kind == "fsn")
        return key.base + (slot - self.first_idx) * key.per_slot + digit

    def prime_values(self, slot: int, position: int) -> dict[str, Any]:
        """Prime-key values (typed; time keys as TAI seconds) in declared order."""
        values: dict[str, Any] = {}
        digits = iter(self.digits(position)) if not self.harps else iter(())
        for key in self.series.primekeys:
            if key.numbered:
                values[key.name] = slot
            elif key.is_time:
                values[key.name] = self.avail.time_of(slot)
            elif key.kind == "harp":
                values[key.name] = position
            elif key.kind == "fsn":
                values[key.name] = self.fsn_value(slot, next(digits), key)
            else:
                values[key.name] = key.values[next(digits)]
        return values

    # --- identity ----------------------------------------------------------------------------
    def ordinal(self, slot: int, position: int) -> int:
        return (slot - self.first_idx) * self.width + position % self.width

    def decode(self, r: int) -> tuple[int, int] | None:
        """(slot, position) of ordinal r if that combination is valid (existence not checked)."""
        if r < 0:
            return None
        rel, residue = divmod(r, self.width)
        slot = self.first_idx + rel
        if not self.harps:
            return slot, residue
        t = self.avail.time_of(slot)
        top = self.harps.last_born(t)
        k = top - ((top - residue) % self.width)
        return (slot, k) if k >= 1 and self.harp_alive(k, slot) else None

    def harp_slots(self, k: int) -> tuple[int, int]:
        """Slot interval of HARP k's life."""
        assert self.harps is not None
        lo = math.ceil((self.harps.birth(k) - self.key.epoch) / self.key.step - 1e-9)
        hi = math.floor((self.harps.death(k) - self.key.epoch) / self.key.step + 1e-9)
        return max(lo, self.first_idx), hi

    def harp_alive(self, k: int, slot: int) -> bool:
        lo, hi = self.harp_slots(k)
        return lo <= slot <= hi

    def reprocessed(self, slot: int, position: int) -> bool:
        """Whether this prime-key combination was reprocessed (has a version 1)."""
        return self.versioned and unit(
            self.seed, self.salt, slot, position // 2, 71) < self.series.reprocessed

    def obsolete(self, slot: int, position: int) -> bool:
        """An original (version 0) record superseded by its reprocessed version."""
        return self.versioned and position % 2 == 0 and self.reprocessed(slot, position)

    def exists(self, slot: int, position: int) -> bool:
        """Whether the record (slot, position) exists now (obsolete versions included)."""
        if self.harps:
            if position < 1 or not self.harp_alive(position, slot):
                return False
        elif not 0 <= position < self.n_positions:
            return False
        if self.versioned and position % 2 and not self.reprocessed(slot, position):
            return False
        return self.avail.exists(slot)
