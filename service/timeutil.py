"""JSOC time strings, TAI/UTC with leap seconds, durations and slot arithmetic.

The rules: docs/jsoc-protocol.md §6.2-§6.3.

Times are TAI seconds since 1977-01-01T00:00:00 TAI (the DRMS epoch), as floats. TAI−UTC comes
from the leap-second table bundled with pyerfa (no network access). Before 1972 the 1972 value
(10 s) is used; the DRMS epoch is 1977, so nothing the service asks for lies there.
"""

from __future__ import annotations

import bisect
import math
import re
from datetime import UTC, datetime, timedelta

import erfa

DRMS_EPOCH = datetime(1977, 1, 1)  # on the TAI scale
DAY = 86400.0
ACCEPTED_TIME_FORMATS = (
    "JSOC style 2014.01.01_00:00:45_TAI, 2014.01.01_00:00_TAI, 2014.01.01_TAI, 2014.01.01_13, "
    "2014.01.01 (no zone means UTC; zones TAI, UTC, UT, Z), ISO 8601 2014-01-01T00:00:00Z, "
    "2014-01-01T00:00:00.5, 2014-01-01 00:00, 2014-01-01 (UTC unless it ends in _TAI or ' TAI'; "
    "offsets like +02:00 are allowed), sunpy's forms such as 2014/01/01 00:00, "
    "2014-Jan-01 00:00, 01-Jan-2014, 20140101T000000, 20140101_0000, 2014:001:00:00:00, "
    "or anything else astropy.time.Time parses"
)
MAX_OFFSET_HOURS = 14  # the widest UTC offsets in use are -12:00 and +14:00
ACCEPTED_DURATIONS = ("a number with a time unit, e.g. 45s, 10m, 10 min, 1.5h, 1 hour, 1d, "
                      "2 days (s/sec/second, m/min/minute, h/hr/hour, d/day, or any astropy "
                      "time unit)")


class TimeFormatError(ValueError):
    """A time or duration string that cannot be understood; the message says what is accepted."""


def _leap_table() -> tuple[list[float], list[float]]:
    """UTC-calendar seconds since 1977-01-01 where each TAI−UTC value starts, and the values."""
    starts, offsets = [], []
    for year, month, tai_minus_utc in erfa.leap_seconds.get():
        if int(year) >= 1972:
            starts.append((datetime(int(year), int(month), 1) - DRMS_EPOCH).total_seconds())
            offsets.append(float(tai_minus_utc))
    return starts, offsets


_LEAP_STARTS_UTC, _LEAP_OFFSETS = _leap_table()


def tai_minus_utc(utc: datetime) -> float:
    """TAI−UTC in seconds in effect at a UTC instant (naive or aware)."""
    naive = _naive_utc(utc)
    seconds = (naive - DRMS_EPOCH).total_seconds()
    i = bisect.bisect_right(_LEAP_STARTS_UTC, seconds) - 1
    return _LEAP_OFFSETS[max(i, 0)]


def _naive_utc(dt: datetime) -> datetime:
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return dt


def utc_to_tai(utc: datetime) -> float:
    """UTC datetime (naive = UTC, or aware) -> TAI seconds since the DRMS epoch."""
    naive = _naive_utc(utc)
    return (naive - DRMS_EPOCH).total_seconds() + tai_minus_utc(naive)


def tai_to_datetime(tai: float) -> datetime:
    """TAI seconds -> naive datetime on the TAI calendar."""
    return DRMS_EPOCH + timedelta(seconds=tai)


_JSOC_RE = re.compile(
    r"(?P<y>\d{4})\.(?P<mo>\d{1,2})\.(?P<d>\d{1,2})"
    r"(?:_(?P<h>\d{1,2})(?::(?P<mi>\d{1,2})(?::(?P<s>\d{1,2}(?:\.\d+)?))?)?)?"
    r"(?:_?(?P<zone>TAI|UTC|UT|Z))?",
    re.IGNORECASE,
)
_ISO_RE = re.compile(
    r"(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})"
    r"(?:[T ](?P<h>\d{2})(?::(?P<mi>\d{2})(?::(?P<s>\d{2}(?:\.\d+)?))?)?)?"
    r"(?:(?P<zone>Z|_TAI| TAI|TAI|_UTC| UTC|UTC)|(?P<off>[+-]\d{2}:?\d{2}))?",
    re.IGNORECASE,
)


def parse_calendar(text: str) -> tuple[datetime, str, bool]:
    """Split a time string into (naive calendar as written, scale "UTC"/"TAI", leap-second flag).

    The calendar is shifted to UTC when the string carries a numeric offset. The flag is True
    for a UTC second 60 (the calendar then holds second 59 and the caller adds one second).
    """
    if not isinstance(text, str):
        raise TimeFormatError(
            f"a time must be a string; got {text!r}. Accepted: {ACCEPTED_TIME_FORMATS}")
    stripped = text.strip()
    match = _JSOC_RE.fullmatch(stripped) or _ISO_RE.fullmatch(stripped)
    if match is None:
        other = _strptime_forms(stripped) or _astropy_time(stripped)
        if other is None:
            raise TimeFormatError(
                f"cannot parse time {text!r}. Accepted: {ACCEPTED_TIME_FORMATS}")
        return other
    parts = match.groupdict()
    zone = (parts.get("zone") or "UTC").strip(" _").upper()
    scale = "TAI" if zone == "TAI" else "UTC"
    second = float(parts["s"] or 0)
    leap = second >= 60
    if leap and (scale == "TAI" or second >= 61):
        raise TimeFormatError(f"time {text!r} has second {second:g}; only UTC allows second 60")
    try:
        calendar = datetime(
            int(parts["y"]), int(parts["mo"]), int(parts["d"]),
            int(parts["h"] or 0), int(parts["mi"] or 0), int(second) - (1 if leap else 0),
        ) + timedelta(seconds=second - int(second))
    except ValueError as exc:
        raise TimeFormatError(f"time {text!r} is not a valid date/time ({exc})") from None
    if parts.get("off"):
        off = parts["off"].replace(":", "")
        if int(off[1:3]) > MAX_OFFSET_HOURS or int(off[3:5]) > 59:
            raise TimeFormatError(f"time {text!r} has the UTC offset {parts['off']}; offsets go "
                                  f"from -{MAX_OFFSET_HOURS}:00 to +{MAX_OFFSET_HOURS}:00")
        delta = timedelta(hours=int(off[1:3]), minutes=int(off[3:5]))
        calendar = calendar - delta if off[0] == "+" else calendar + delta
    return calendar, scale, leap


# sunpy's other string forms (sunpy.time.parse_time), with an optional zone suffix
_CLOCKS = ("%H:%M:%S.%f", "%H:%M:%S", "%H:%M")
_STRPTIME_FORMATS = (
    *(f"{date}{sep}{clock}" for date, seps in (("%Y/%m/%d", " T"), ("%Y-%b-%d", " "),
                                                ("%d-%b-%Y", " "))
      for sep in seps for clock in _CLOCKS),
    "%Y/%m/%d", "%Y-%b-%d", "%d-%b-%Y",
    # without separators the shorter form goes first (strptime takes one-digit hours)
    "%Y%m%dT%H%M%S.%f", "%Y%m%dT%H%M", "%Y%m%dT%H%M%S", "%Y%m%d_%H%M", "%Y%m%d_%H%M%S",
    "%Y%m%d%H%M", "%Y%m%d%H%M%S", "%Y:%j:%H:%M:%S.%f", "%Y:%j:%H:%M:%S",
)
_ZONE_SUFFIX_RE = re.compile(r"(?P<body>.*?)(?:[ _]?(?P<zone>TAI|UTC|UT|Z))?", re.IGNORECASE)


def _strptime_forms(text: str) -> tuple[datetime, str, bool] | None:
    """sunpy's slash, month-name, compact and day-of-year forms (UTC unless they say TAI)."""
    match = _ZONE_SUFFIX_RE.fullmatch(text)
    body, zone = (match["body"], match["zone"]) if match else (text, None)
    scale = "TAI" if (zone or "").upper() == "TAI" else "UTC"
    for fmt in _STRPTIME_FORMATS:
        try:
            return datetime.strptime(body, fmt), scale, False
        except ValueError:
            continue
    return None


def _astropy_time(text: str) -> tuple[datetime, str, bool] | None:
    """Anything else astropy.time.Time parses (e.g. J2000.5), on its UTC or TAI calendar."""
    if not any(ch.isdigit() for ch in text):
        return None
    from astropy.time import Time  # only for unusual forms: the import is slow

    try:
        parsed = Time(text)
        scale = "TAI" if parsed.scale == "tai" else "UTC"
        value = parsed if scale == "TAI" else parsed.utc
        return value.to_datetime(), scale, False
    except (ValueError, TypeError, OverflowError):
        return None


def parse_time(text: str) -> float:
    """JSOC or ISO time string -> TAI seconds since the DRMS epoch (UTC unless it says TAI)."""
    calendar, scale, leap = parse_calendar(text)
    if scale == "TAI":
        return (calendar - DRMS_EPOCH).total_seconds()
    return utc_to_tai(calendar) + (1.0 if leap else 0.0)


def _seconds_text(second: float) -> str:
    whole = int(second)
    frac = round(second - whole, 6)
    if frac <= 0 or frac >= 1:
        return f"{whole + (1 if frac >= 1 else 0):02d}"
    return f"{whole:02d}" + f"{frac:.6f}"[1:].rstrip("0")


def format_tai(tai: float) -> str:
    """TAI seconds -> JSOC TAI string, e.g. 2014.01.01_00:00:45_TAI (fraction only if needed)."""
    dt = tai_to_datetime(round(tai, 6))
    sec = dt.second + dt.microsecond / 1e6
    return f"{dt:%Y.%m.%d_%H:%M}:{_seconds_text(sec)}_TAI"


_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([a-z]+)", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": DAY}
_UNIT_ALIASES = {
    "s": ("s", "sec", "secs", "second", "seconds"),
    "m": ("m", "min", "mins", "minute", "minutes"),
    "h": ("h", "hr", "hrs", "hour", "hours"),
    "d": ("d", "day", "days"),
}
_UNITS = {alias: _UNIT_SECONDS[unit] for unit, names in _UNIT_ALIASES.items() for alias in names}


def _astropy_seconds(text: str) -> float | None:
    """Seconds of an astropy quantity string in a time unit ("1 week", "3600000 ms")."""
    import astropy.units as u  # only for unusual units: the import is slow

    try:
        return float(u.Quantity(text).to_value(u.s))
    except (ValueError, TypeError, u.UnitsError):
        return None


def _text_seconds(text: str) -> float | None:
    """Seconds of a number with a time unit (astropy for unusual units), or None."""
    match = _DURATION_RE.fullmatch(text)
    if not match:
        return None
    unit = _UNITS.get(match[2].lower())
    return float(match[1]) * unit if unit else _astropy_seconds(text)


def parse_duration(value: str | float | int) -> float:
    """"45s", "10 min", "1.5h", "1 day" (or a plain number of seconds) -> seconds, > 0."""
    if isinstance(value, bool):
        raise TimeFormatError(f"a duration must be {ACCEPTED_DURATIONS}; got {value!r}")
    seconds = float(value) if isinstance(value, int | float) else _text_seconds(str(value).strip())
    if seconds is None:
        raise TimeFormatError(f"a duration must be {ACCEPTED_DURATIONS}; got {value!r}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise TimeFormatError(f"a duration must be positive ({ACCEPTED_DURATIONS}); got {value!r}")
    return seconds


def step_seconds(value: object) -> float | None:
    """A step or round value as ``series_struct`` writes it ("45", "45.000000", "720s", "1d",
    45) in seconds; None when it is not a duration (absent, empty, MISSING)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        return _text_seconds(text) if text else None


def format_duration(seconds: float) -> str:
    """Seconds -> the shortest exact JSOC duration, e.g. 7200 -> '2h', 600 -> '10m', 45 -> '45s'."""
    for unit, size in (("d", DAY), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size and float(seconds) % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s" if float(seconds).is_integer() else f"{seconds!r}s"


# --- slot arithmetic (docs/jsoc-protocol.md §6.3) --------------------------------------------

def slot_index(tai: float, epoch: float, step: float, round_: float | None = None) -> int:
    """Slot of a time: floor((t − epoch + step/2) / step); ``round_/2`` replaces step/2 if given."""
    half = step / 2.0 if round_ is None else round_ / 2.0
    return math.floor((tai - epoch + half) / step + 1e-9)


def slot_time(index: int, epoch: float, step: float) -> float:
    """TAI seconds of slot ``index``: epoch + index × step."""
    return epoch + index * step


def cadence_stride(cadence: float | None, step: float) -> int:
    """Slots between samples for ``@cadence``: round(cadence/step), at least 1."""
    return 1 if cadence is None else max(1, round(cadence / step))


def duration_slot_count(duration: float, step: float) -> int:
    """Slots selected by ``a/d``: max(1, floor(d/step))."""
    return max(1, math.floor(duration / step + 1e-9))


def duration_range_slots(
    start: float, duration: float, epoch: float, step: float,
    round_: float | None = None, cadence: float | None = None,
) -> range:
    """Slot indices of ``start/duration[@cadence]``: end excluded, every stride-th slot."""
    first = slot_index(start, epoch, step, round_)
    return range(first, first + duration_slot_count(duration, step), cadence_stride(cadence, step))


def interval_slots(
    start: float, end: float, epoch: float, step: float,
    round_: float | None = None, cadence: float | None = None,
) -> range:
    """Slot indices of ``start-end[@cadence]``: both ends included."""
    first = slot_index(start, epoch, step, round_)
    last = slot_index(end, epoch, step, round_)
    return range(first, last + 1, cadence_stride(cadence, step))
