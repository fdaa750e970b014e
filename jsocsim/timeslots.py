"""JSOC time strings <-> TAI seconds since the DRMS epoch, leap seconds, durations, slots.

Internal time is TAI seconds since 1977-01-01T00:00:00 TAI (a float). UTC <-> TAI uses the
leap-second table bundled with pyerfa (no network). Slot arithmetic follows
docs/jsoc-protocol.md §6.3.
"""

from __future__ import annotations

import bisect
import math
import re
from datetime import date, datetime, timedelta

import erfa
import numpy as np

DRMS_EPOCH = datetime(1977, 1, 1)  # 1977-01-01 00:00:00 TAI
_EPOCH_ORDINAL = DRMS_EPOCH.toordinal()
TT_MINUS_TAI = 32.184
DAY = 86400.0


def _leap_table() -> tuple[list[float], list[float]]:
    """(UTC naive seconds of each step since the epoch, TAI-UTC from then on), from 1972."""
    starts: list[float] = []
    offsets: list[float] = []
    for year, month, tai_utc in erfa.leap_seconds.get():
        if int(year) < 1972:
            continue
        days = date(int(year), int(month), 1).toordinal() - _EPOCH_ORDINAL
        starts.append(days * DAY)
        offsets.append(float(tai_utc))
    return starts, offsets


_LEAP_UTC, _LEAP_OFFSET = _leap_table()
# TAI instant at which each offset takes effect (the end of the inserted leap second).
_LEAP_TAI = [u + o for u, o in zip(_LEAP_UTC, _LEAP_OFFSET, strict=True)]
_LEAP_TAI_ARRAY, _LEAP_OFFSET_ARRAY = np.array(_LEAP_TAI), np.array(_LEAP_OFFSET)


def tai_minus_utc_at_utc(utc_naive: float) -> float:
    """TAI-UTC (seconds) in effect at a UTC instant given as naive seconds since 1977-01-01."""
    i = bisect.bisect_right(_LEAP_UTC, utc_naive) - 1
    return _LEAP_OFFSET[max(i, 0)]


def tai_minus_utc(tai: float | np.ndarray) -> np.ndarray:
    """TAI-UTC (seconds) at TAI instants, vectorised (inside a leap second: the old offset)."""
    i = np.searchsorted(_LEAP_TAI_ARRAY, np.asarray(tai, dtype=float), side="right") - 1
    return _LEAP_OFFSET_ARRAY[np.maximum(i, 0)]


def _utc_naive_from_tai(tai: float) -> tuple[float, bool]:
    """UTC naive seconds for a TAI instant, and whether it lies inside a leap second."""
    i = bisect.bisect_right(_LEAP_TAI, tai) - 1
    if i < 0:
        return tai - _LEAP_OFFSET[0], False
    naive = tai - _LEAP_OFFSET[i]
    if i + 1 < len(_LEAP_TAI) and tai >= _LEAP_TAI[i + 1] - 1.0:
        # The last second before the step: 23:59:60 UTC.
        return _LEAP_UTC[i + 1] - 1.0 + (tai - (_LEAP_TAI[i + 1] - 1.0)), True
    return naive, False


def utc_to_tai(dt: datetime) -> float:
    """UTC datetime (naive or aware UTC) -> TAI seconds since the DRMS epoch."""
    naive = (dt.replace(tzinfo=None) - DRMS_EPOCH).total_seconds()
    return naive + tai_minus_utc_at_utc(naive)


def tai_to_datetime(tai: float) -> datetime:
    """TAI seconds -> naive datetime on the TAI scale."""
    return DRMS_EPOCH + timedelta(seconds=tai)


_TIME_RE = re.compile(
    r"^\s*(\d{4})[.\-/](\d{1,2})[.\-/](\d{1,2})"
    r"(?:[_T ](\d{1,2})(?::(\d{1,2})(?::(\d{1,2}(?:\.\d*)?))?)?)?"
    r"(?:_?(TAI|UTC|UT|Z|TT|GMT))?\s*$",
    re.IGNORECASE,
)


def parse_time(text: str) -> float:
    """JSOC/ISO time string -> TAI seconds. Values with no zone (or Z/UTC/UT/GMT) are UTC.

    Accepts e.g. 2014.01.01_00:00:45_TAI, 2013.07.03_08:42_TAI, 2016.04.01_TAI, 2010.07.25_13,
    2014-01-01T00:00:00Z, 2025-01-01T04:33:30.000; parts left off default to the interval start.
    """
    m = _TIME_RE.match(text)
    if not m:
        raise ValueError(
            f"cannot parse time '{text}': expected e.g. 2014.01.01_00:00:45_TAI "
            "or 2014-01-01T00:00:00Z"
        )
    year, month, day = int(m[1]), int(m[2]), int(m[3])
    hour, minute = int(m[4] or 0), int(m[5] or 0)
    second = float(m[6] or 0.0)
    if not (1 <= month <= 12) or hour > 24 or minute > 59 or second >= 61:
        raise ValueError(f"time '{text}' has a field out of range")
    try:
        days = date(year, month, day).toordinal() - _EPOCH_ORDINAL
    except ValueError as exc:
        raise ValueError(f"time '{text}' is not a valid date ({exc})") from None
    naive = days * DAY + hour * 3600 + minute * 60 + second
    zone = (m[7] or "UTC").upper()
    if zone == "TAI":
        return naive
    if zone == "TT":
        return naive - TT_MINUS_TAI
    # UTC: the offset is the one in effect just before a possible :60 second.
    offset_probe = naive - max(0.0, second - 59.999) if second >= 60 else naive
    return naive + tai_minus_utc_at_utc(offset_probe)


def _split_seconds(total: float, decimals: int) -> tuple[int, int, int, int, int]:
    """Naive seconds -> (ordinal day, hour, minute, whole seconds, fraction units), rounded."""
    scale = 10**decimals
    units = round(total * scale)
    day, rem = divmod(units, 86400 * scale)
    secs, frac = divmod(rem, scale)
    hour, rem = divmod(secs, 3600)
    minute, second = divmod(rem, 60)
    return int(day) + _EPOCH_ORDINAL, int(hour), int(minute), int(second), int(frac)


def _utc_fields(tai: float, decimals: int) -> tuple[date, int, int, int, int]:
    """Rounded UTC calendar fields for a TAI instant; a leap second shows as second 60."""
    scale = 10**decimals
    # Round on the TAI scale first so that rounding never crosses a leap step inconsistently.
    tai_r = round(tai * scale) / scale
    naive, in_leap = _utc_naive_from_tai(tai_r)
    if in_leap:
        ordinal, hour, minute, second, frac = _split_seconds(naive, decimals)
        return date.fromordinal(ordinal), hour, minute, second + 1, frac
    ordinal, hour, minute, second, frac = _split_seconds(naive, decimals)
    return date.fromordinal(ordinal), hour, minute, second, frac


def format_time(tai: float, style: str) -> str:
    """Format TAI seconds in a JSOC display style.

    Styles: "tai" (2014.01.01_00:00:45_TAI), "tai_frac" (2014.01.01_00:00:37.50_TAI),
    "iso_z" (UTC 2014-01-01T00:00:01Z), "iso_frac" (UTC 2013-12-31T23:59:39.20Z),
    "date" (UTC 2014-01-05T17:46:02Z), "utc" (2014.01.01_00:00:01_UTC), "day" (2014.01.01).
    """
    if style in ("tai", "tai_frac", "day"):
        decimals = 2 if style == "tai_frac" else 0
        ordinal, hour, minute, second, frac = _split_seconds(tai, decimals)
        d = date.fromordinal(ordinal)
        if style == "day":
            return f"{d.year:04d}.{d.month:02d}.{d.day:02d}"
        fs = f".{frac:02d}" if decimals else ""
        return (
            f"{d.year:04d}.{d.month:02d}.{d.day:02d}_{hour:02d}:{minute:02d}:{second:02d}{fs}_TAI"
        )
    if style in ("iso_z", "date", "iso_frac", "utc"):
        decimals = 2 if style == "iso_frac" else 0
        d, hour, minute, second, frac = _utc_fields(tai, decimals)
        if style == "utc":
            return (
                f"{d.year:04d}.{d.month:02d}.{d.day:02d}_{hour:02d}:{minute:02d}:{second:02d}_UTC"
            )
        fs = f".{frac:02d}" if decimals else ""
        return f"{d.isoformat()}T{hour:02d}:{minute:02d}:{second:02d}{fs}Z"
    raise ValueError(
        f"unknown time style '{style}': use tai, tai_frac, iso_z, iso_frac, date, utc, day"
    )


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": DAY}


def parse_duration(text: str) -> float:
    """ "45s", "3m", "6h", "1d", "300.0s" (no unit = seconds) -> seconds."""
    m = _DURATION_RE.match(text)
    if not m:
        raise ValueError(
            f"cannot parse duration '{text}': expected a number with unit s, m, h or d"
        )
    return float(m[1]) * _UNIT_SECONDS[m[2].lower()]


def format_duration(seconds: float) -> str:
    """Seconds -> the shortest JSOC duration string, e.g. 720 -> '12m', 45 -> '45s'."""
    for unit, size in (("d", DAY), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def slot_index(tai: float, epoch: float, step: float, round_: float | None = None) -> int:
    """Nearest slot (ties up): floor((t - epoch + step/2) / step); with round_, round_/2 instead.

    round_=0 gives plain floor (a ts_slot key without a <key>_round keyword).
    """
    half = step / 2.0 if round_ is None else round_ / 2.0
    return math.floor((tai - epoch + half) / step + 1e-9)


def slot_time(index: int, epoch: float, step: float) -> float:
    """TAI seconds of slot `index`."""
    return epoch + index * step


def duration_slots(duration: float, step: float) -> int:
    """Number of slots in `a/d`: max(1, floor(d/step))."""
    return max(1, math.floor(duration / step + 1e-9))


def sample_stride(cadence: float, step: float) -> int:
    """Slots between samples for `@cadence`: max(1, round(cadence/step))."""
    return max(1, round(cadence / step))
