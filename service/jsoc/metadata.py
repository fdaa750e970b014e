"""Series metadata as the service sees it, parsed from JSOC's ``series_struct`` reply."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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

    @property
    def keyword_names(self) -> list[str]:
        return [k.name for k in self.keywords]

    @property
    def segment_names(self) -> list[str]:
        return [s.name for s in self.segments]

    @property
    def primekey_names(self) -> list[str]:
        return [p.name for p in self.primekeys]

    def time_key(self) -> PrimeKeyInfo | None:
        """The first time-valued prime key (T_REC, T_OBS, T_START …), if any."""
        return next((p for p in self.primekeys if p.is_time), None)
