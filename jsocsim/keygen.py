"""Keyword value generators (named by each keyword's "derive" in the catalog) and formatting.

A generator takes (record, keyword) and returns the typed value: TAI seconds for time-like
values, int, float or str; None means MISSING. Observational values are MISSING when the
record has no image (QUALITY bit 31 set); QUALITY itself is never MISSING.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from jsocsim.availability import series_salt, unit
from jsocsim.catalog import Keyword
from jsocsim.flares import aec_factor
from jsocsim.timeslots import format_time, parse_time

if TYPE_CHECKING:
    from jsocsim.records import Record

Generator = Callable[["Record", Keyword], Any]


def _jitter(rec: Record, kw: Keyword, tag: int) -> float:
    """Symmetric seeded jitter in [-jitter, +jitter]; shared by keywords with the same tag."""
    amount = float(kw.params.get("jitter", 0.0))
    return (
        amount * (2.0 * unit(rec.engine.config.seed, rec.salt, rec.r, tag) - 1.0) if amount else 0.0
    )


def _const(rec: Record, kw: Keyword) -> Any:
    value = kw.params.get("value", kw.defval)
    if kw.type == "time" and isinstance(value, str):
        return parse_time(value)
    return value


def _t_obs_offset(rec: Record, kw: Keyword) -> float:
    return rec.time + float(kw.params.get("offset", 0.0)) + _jitter(rec, kw, 21)


def _date_processed(rec: Record, kw: Keyword) -> float:
    amount = float(kw.params.get("jitter", 0.0))
    return (
        rec.time
        + float(kw.params.get("delay", 0.0))
        + amount * unit(rec.engine.config.seed, rec.salt, rec.r, 22)
    )


def _ephemeris(name: str) -> Generator:
    def gen(rec: Record, kw: Keyword) -> Any:
        value = rec.ephemeris()[name]
        return int(value) if name == "CAR_ROT" else float(value)

    return gen


def _commanded_exposure(rec: Record, kw: Keyword) -> float | None:
    """Exposure AIA commanded (s): the channel's normal one, shortened by the AEC in flares."""
    wave = rec.value_of(kw.params.get("source", "WAVELNTH"))
    base = kw.params.get("base", {}).get(str(wave))
    if base is None:
        return None
    return float(base) * aec_factor(rec.time, rec.slot, int(wave))


def _exptime_aia(rec: Record, kw: Keyword) -> float | None:
    commanded = _commanded_exposure(rec, kw)
    if commanded is None:
        return None
    rel = float(kw.params.get("jitter", 0.0)) * (
        2.0 * unit(rec.engine.config.seed, rec.salt, rec.r, 23) - 1
    )
    return round(commanded * (1.0 + rel), 6)


def _aec_shutter(rec: Record, kw: Keyword) -> int | None:
    """AIMGSHCE: the commanded exposure in ms (EXPTIME's keyword gives the channel table)."""
    exptime = rec.series.keyword(kw.params.get("exptime", "EXPTIME"))
    commanded = None if exptime is None else _commanded_exposure(rec, exptime)
    return None if commanded is None else round(commanded * 1000.0)


def _map(rec: Record, kw: Keyword) -> Any:
    return kw.params.get("map", {}).get(
        str(rec.value_of(kw.params["source"])), kw.params.get("default")
    )


def _position(rec: Record, kw: Keyword) -> Any:
    values = kw.params.get("values", [])
    return values[rec.position % len(values)] if values else None


def _fsn(rec: Record, kw: Keyword) -> int | None:
    """FSN of the matching image in the target series (e.g. aia.lev1), so links resolve."""
    target = rec.engine.model(kw.params["target"])
    pos = kw.params.get("positions", {}).get(str(rec.value_of(kw.params.get("source", "WAVELNTH"))))
    if pos is None:
        return None
    slot = math.floor((rec.time - target.key.epoch) / target.key.step + 1e-9)
    return target.fsn_value(slot, int(pos))


def _uniform(rec: Record, kw: Keyword) -> float | int:
    lo, hi = float(kw.params.get("lo", 0.0)), float(kw.params.get("hi", 1.0))
    value = lo + (hi - lo) * unit(rec.engine.config.seed, rec.salt, rec.r, series_salt(kw.name))
    return int(value) if kw.params.get("integer") else value


GENERATORS: dict[str, Generator] = {
    "t_rec": lambda rec, kw: rec.time,
    "pkey": lambda rec, kw: rec.prime.get(kw.params.get("key", kw.name)),
    "const": _const,
    "t_obs_offset": _t_obs_offset,
    "date_processed": _date_processed,
    "car_rot": _ephemeris("CAR_ROT"),
    "crlt_obs": _ephemeris("CRLT_OBS"),
    "crln_obs": _ephemeris("CRLN_OBS"),
    "dsun_obs": _ephemeris("DSUN_OBS"),
    "rsun_obs": _ephemeris("RSUN_OBS"),
    "obs_vr": _ephemeris("OBS_VR"),
    "exptime_aia": _exptime_aia,
    "aec_shutter": _aec_shutter,
    "quality": lambda rec, kw: rec.quality,
    "map": _map,
    "position": _position,
    "fsn": _fsn,
    "uniform": _uniform,
    "missing": lambda rec, kw: None,
}
EPHEMERIS = {"car_rot", "crlt_obs", "crln_obs", "dsun_obs", "rsun_obs", "obs_vr"}
OBSERVATIONAL = EPHEMERIS | {"exptime_aia", "aec_shutter", "uniform"}


def observer_of(keywords: Iterable[Keyword]) -> str:
    """Vantage point of a series' observer keywords ("observer" param; default geocentric)."""
    return next((str(kw.params.get("observer", "earth")) for kw in keywords
                 if kw.derive in EPHEMERIS), "earth")


def generate(rec: Record, kw: Keyword) -> Any:
    """Typed value of keyword `kw` for `rec` (None = MISSING)."""
    if kw.derive in OBSERVATIONAL and not rec.image_exists:
        return None
    try:
        gen = GENERATORS[kw.derive]
    except KeyError:
        raise ValueError(f"catalog keyword {kw.name}: unknown derive '{kw.derive}'") from None
    return gen(rec, kw)


def is_time_like(kw: Keyword) -> bool:
    return kw.type == "time" or "style" in kw.params


def time_style(kw: Keyword, default: str) -> str:
    return str(kw.params.get("style", default))


def format_value(kw: Keyword, value: Any, default_style: str) -> str:
    """The string rs_list shows for a typed value."""
    if value is None:
        return "MISSING"
    if is_time_like(kw) and isinstance(value, float | int):
        return format_time(float(value), time_style(kw, default_style))
    if kw.derive == "quality":
        return f"0x{int(value) & 0xFFFFFFFF:08x}"
    if kw.type in ("int", "short", "longlong", "char") and isinstance(value, int | float):
        return kw.format % value if kw.format else str(int(value))
    if kw.type in ("float", "double") and isinstance(value, int | float):
        return (
            kw.format % value if kw.format else ("%.6g" if kw.type == "float" else "%.15g") % value
        )
    return str(value)


def header_value(kw: Keyword, value: Any, default_style: str) -> Any:
    """The value for a FITS header: time-like values as their display string, else typed."""
    if value is None:
        return None
    if is_time_like(kw) and isinstance(value, float | int):
        return format_time(float(value), time_style(kw, default_style))
    if kw.type in ("float", "double") and isinstance(value, int | float):
        return float(format_value(kw, value, default_style))
    return value


def coerce_literal(kw: Keyword, literal: Any) -> Any:
    """A query literal converted into keyword `kw`'s comparable domain."""
    if is_time_like(kw) and isinstance(literal, str):
        try:
            return parse_time(literal)
        except ValueError:
            return literal
    if kw.type in ("int", "short", "longlong", "float", "double") and isinstance(literal, str):
        try:
            return int(literal, 0) if kw.type not in ("float", "double") else float(literal)
        except ValueError:
            return literal
    if kw.type in ("string", "char") and not isinstance(literal, str):
        return str(literal)
    return literal
