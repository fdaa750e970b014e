"""Series metadata as the service sees it, parsed from JSOC's ``series_struct`` reply."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from service.timeutil import step_seconds


@dataclass(frozen=True)
class PrimeKeyInfo:
    """One prime key; ``step`` (seconds) is set for slotted time keys."""

    name: str
    slotted: bool = False
    step: float | None = None
    epoch: str | None = None
    is_time: bool = False


@dataclass(frozen=True)
class KeywordInfo:
    name: str
    type: str
    units: str = ""
    note: str = ""


@dataclass(frozen=True)
class SegmentInfo:
    name: str
    protocol: str = "fits"
    dims: str = ""
    units: str = ""
    note: str = ""


@dataclass(frozen=True)
class SeriesMeta:
    """What planning and validation need to know about a series."""

    name: str
    note: str
    primekeys: list[PrimeKeyInfo]
    keywords: list[KeywordInfo]
    segments: list[SegmentInfo]
    links: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    first_record: str | None = None  # series_struct Interval (None: empty or not sent)
    last_record: str | None = None

    @property
    def keyword_names(self) -> list[str]:
        return [k.name for k in self.keywords]

    @property
    def segment_names(self) -> list[str]:
        return [s.name for s in self.segments]

    @property
    def primekey_names(self) -> list[str]:
        return [p.name for p in self.primekeys]

    def export_filenamefmt(self) -> str:
        """The file-name template drms sends with exports: the series, then each prime key
        (time keys compacted with JSOC's ``A`` modifier), then the segment; e.g.
        ``hmi.m_720s.{T_REC:A}.{CAMERA}.{segment}``, which JSOC renders as
        ``hmi.m_720s.20140101_000000_TAI.1.magnetogram.fits``.
        """
        keys = [f"{{{p.name}:A}}" if p.is_time else f"{{{p.name}}}" for p in self.primekeys]
        return ".".join([self.name.lower(), *(keys or ["{recnum:%lld}"]), "{segment}"])

    def time_key(self) -> PrimeKeyInfo | None:
        """The first time-valued prime key (T_REC, T_OBS, T_START …), if any."""
        return next((p for p in self.primekeys if p.is_time), None)


def _keyword_defaults(keywords: list[dict[str, Any]]) -> dict[str, str]:
    return {str(k.get("name", "")).lower(): str(k.get("defval", "")) for k in keywords}


def _primekeys(payload: dict[str, Any], keywords: list[dict[str, Any]]) -> list[PrimeKeyInfo]:
    types = {str(k.get("name", "")).lower(): str(k.get("type", "")) for k in keywords}
    defaults = _keyword_defaults(keywords)
    infos = {str(p.get("name")): p for p in payload.get("primekeysinfo") or [] if p}
    result = []
    for name in payload.get("primekeys") or []:
        if not name:  # a series without prime keys reports [null]
            continue
        info = infos.get(name, {})
        slotted = bool(int(info.get("slotted", 0) or 0))
        step = step_seconds(info.get("step")) if slotted else None
        if slotted and step is None:
            step = step_seconds(defaults.get(f"{name.lower()}_step"))
        epoch = defaults.get(f"{name.lower()}_epoch") if slotted else None
        result.append(PrimeKeyInfo(name=name, slotted=slotted, step=step, epoch=epoch or None,
                                   is_time=types.get(name.lower()) == "time"))
    return result


def parse_series_struct(payload: dict[str, Any], name: str | None = None) -> SeriesMeta:
    """SeriesMeta from a jsoc_info op=series_struct reply (docs/jsoc-protocol.md §3.4).

    `name` is the series name as asked; the reply itself does not repeat it.
    """
    keywords = [k for k in payload.get("keywords") or [] if isinstance(k, dict)]
    return SeriesMeta(
        name=name or str(payload.get("name", "")),
        note=str(payload.get("note") or ""),
        primekeys=_primekeys(payload, keywords),
        keywords=[KeywordInfo(name=str(k.get("name")), type=str(k.get("type") or ""),
                              units=str(k.get("units") or ""), note=str(k.get("note") or ""))
                  for k in keywords],
        segments=[SegmentInfo(name=str(s.get("name")), protocol=str(s.get("protocol") or ""),
                              dims=str(s.get("dims") or ""), units=str(s.get("units") or ""),
                              note=str(s.get("note") or ""))
                  for s in payload.get("segments") or [] if isinstance(s, dict)],
        links=[str(link.get("name")) for link in payload.get("links") or []
               if isinstance(link, dict)],
        raw=payload,
        first_record=_interval_record(payload, "FirstRecord"),
        last_record=_interval_record(payload, "LastRecord"),
    )


def _interval_record(payload: dict[str, Any], name: str) -> str | None:
    interval = payload.get("Interval")
    value = interval.get(name) if isinstance(interval, dict) else None
    return value if isinstance(value, str) and value not in ("", "NA") else None
