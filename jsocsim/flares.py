"""Real major flares (GOES M and X class) and the AIA exposure control they trigger.

The table is `data/flares_known.csv` (a short, hand-entered list of well-known X flares), or
the operator's own full copy of NOAA/SWPC's event list in the same columns, named by the
environment variable JSOCSIM_FLARE_TABLE (`jsocsim --flare-table FILE` sets it).

While a flare is under way (GOES start to end), AIA's automatic exposure
control (AEC) takes every other image of an EUV channel with a short exposure; the rest keep
the normal one. How short follows the flare's GOES class: the exposure is scaled so that the
brighter the flare the shorter it gets (about 0.2 of normal for an M2, 0.08 for an X1.5),
never below 2 % of normal. Outside flares nothing changes.
"""

from __future__ import annotations

import bisect
import csv
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

from jsocsim.timeslots import parse_time

CLASS_FLUX = {"A": 1e-8, "B": 1e-7, "C": 1e-6, "M": 1e-5, "X": 1e-4}
SHORT_AT_M1 = 0.3  # short / normal exposure for an M1.0 flare
MIN_SHORT = 0.02  # never shorter than this fraction of the normal exposure
EUV_CHANNELS = frozenset({94, 131, 171, 193, 211, 304, 335})


def goes_flux(goes_class: str) -> float:
    """Peak 1-8 A flux (W/m^2) of a GOES class such as 'X1.5'."""
    text = goes_class.strip().upper()
    if not text or text[0] not in CLASS_FLUX:
        raise ValueError(f"GOES class {goes_class!r}: expected a letter A/B/C/M/X and a number")
    try:
        return CLASS_FLUX[text[0]] * float(text[1:] or 1.0)
    except ValueError:
        raise ValueError(f"GOES class {goes_class!r}: expected e.g. M2.7 or X1.5") from None


@dataclass(frozen=True)
class Flare:
    start: float  # TAI seconds since 1977
    peak: float
    end: float
    goes_class: str
    noaa_ar: int | None

    @property
    def flux(self) -> float:
        return goes_flux(self.goes_class)


class FlareTable:
    """Flares sorted by start, with fast 'which flare is under way' look-ups."""

    def __init__(self, flares: list[Flare]) -> None:
        self.flares = sorted(flares, key=lambda f: f.start)
        self._start = np.array([f.start for f in self.flares], dtype=float)
        self._end = np.array([f.end for f in self.flares], dtype=float)
        self._flux = np.array([f.flux for f in self.flares], dtype=float)
        # flares may overlap: the latest end among all flares started so far
        reach = np.maximum.accumulate(self._end) if self.flares else self._end
        self._start_list, self._end_list = self._start.tolist(), self._end.tolist()
        self._reach_list, self._flux_list = reach.tolist(), self._flux.tolist()

    def __len__(self) -> int:
        return len(self.flares)

    def peak_flux(self, tai: float | np.ndarray) -> np.ndarray:
        """GOES flux of the brightest flare under way at each time (0 where none)."""
        return np.array([self.flux_at(t) for t in np.atleast_1d(np.asarray(tai, float))])

    def flux_at(self, tai: float) -> float:
        """Flux of the brightest flare under way at `tai` (0 if none); quiet times cost a
        bisect and one comparison (this runs per record)."""
        j = bisect.bisect_right(self._start_list, tai) - 1
        flux = 0.0
        while j >= 0 and self._reach_list[j] >= tai:
            if self._end_list[j] >= tai:
                flux = max(flux, self._flux_list[j])
            j -= 1
        return flux

    def between(self, t0: float, t1: float) -> list[Flare]:
        """Flares under way at some time in [t0, t1]."""
        return [f for f in self.flares if f.start <= t1 and f.end >= t0]


def _utc(text: str) -> float:
    return parse_time(text.strip())


def parse_table(lines: list[str]) -> FlareTable:
    """A FlareTable from the CSV text (lines starting with '#' are comments)."""
    rows = csv.DictReader(line for line in lines if line.strip() and not line.startswith("#"))
    flares = []
    for n, row in enumerate(rows, start=1):
        try:
            ar = row.get("noaa_ar", "").strip()
            flares.append(Flare(_utc(row["start"]), _utc(row["peak"]), _utc(row["end"]),
                                row["goes_class"].strip(), int(ar) if ar else None))
        except (KeyError, ValueError) as exc:
            raise ValueError(f"flare table data row {n}: {exc}") from None
    return FlareTable(flares)


FLARE_TABLE_ENV = "JSOCSIM_FLARE_TABLE"


@lru_cache(maxsize=1)
def flare_table() -> FlareTable:
    """The operator's table named by JSOCSIM_FLARE_TABLE, else the shipped one (read once)."""
    path = os.environ.get(FLARE_TABLE_ENV)
    if path:
        try:
            text = open(path, encoding="utf-8").read()  # noqa: SIM115
        except OSError as exc:
            raise ValueError(f"{FLARE_TABLE_ENV}={path}: cannot read the flare table: "
                             f"{exc.strerror}") from None
    else:
        text = resources.files("jsocsim").joinpath("data/flares_known.csv").read_text("utf-8")
    return parse_table(text.splitlines())


def short_fraction(flux: float) -> float:
    """Short / normal exposure for a flare of this GOES peak flux (1 where flux is 0)."""
    if flux <= 0:
        return 1.0
    return min(1.0, max(MIN_SHORT, SHORT_AT_M1 * math.sqrt(CLASS_FLUX["M"] / flux)))


def aec_factor(tai: float, slot: int, wavelength: int) -> float:
    """Exposure factor the AEC applies to this image: < 1 on short exposures, else 1."""
    if wavelength not in EUV_CHANNELS or slot % 2 == 0:
        return 1.0
    return short_fraction(flare_table().flux_at(tai))
