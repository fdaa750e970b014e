"""An ``rs_list`` reply read once: record names (asked with ``R=1``) and keyword columns.

Everything that reads an ``rs_list`` reply reads it through ``parse_listing``: size estimates
(``*size*``), a mirror's newest record and late records (time keys), the preview's first and
last record names, the wavelengths of a series and the keywords a path template names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from service.timeutil import TimeFormatError, parse_time

SIZE_KEY = "*size*"


@dataclass(frozen=True)
class RecordListing:
    """Record names in the order listed, and keyword columns by upper-case key name."""

    names: list[str]
    columns: dict[str, list[Any]]

    def values(self, key: str) -> list[Any]:
        """The values of one keyword column ([] when absent)."""
        return self.columns.get(key.upper(), [])

    def times(self, key: str) -> list[float]:
        """A time keyword's values as TAI seconds (MISSING and the like left out: the list no
        longer lines up with ``names``; ``record_times`` keeps each record with its time)."""
        return [t for t in map(_tai, self.values(key)) if t is not None]

    def record_times(self, key: str) -> list[tuple[str, float | None]]:
        """Each listed record's name with its time keyword as TAI seconds; None where the value
        cannot be read (JSOC's MISSING and the like) or the column is absent."""
        column = self.values(key)
        return [(name, _tai(column[i]) if i < len(column) else None)
                for i, name in enumerate(self.names)]

    def sizes(self) -> list[int]:
        """The ``*size*`` values in bytes ("NA" left out)."""
        return [int(v) for v in self.values(SIZE_KEY) if str(v).isdigit()]

    def mean_size(self) -> int:
        """The mean ``*size*`` in bytes (0 when none is known)."""
        sizes = self.sizes()
        return sum(sizes) // len(sizes) if sizes else 0

    def table(self, keys: Mapping[str, str]) -> dict[str, dict[str, Any]]:
        """record name (lower case) -> {label: value of the column ``keys[label]``}."""
        table: dict[str, dict[str, Any]] = {}
        for i, name in enumerate(self.names):
            row = {}
            for label, key in keys.items():
                column = self.values(key)
                if i < len(column):
                    row[label] = column[i]
            table[name.lower()] = row
        return table


def _tai(value: Any) -> float | None:
    """A time value as TAI seconds (None when it is not a readable time, e.g. MISSING)."""
    try:
        return parse_time(str(value))
    except TimeFormatError:
        return None


def parse_listing(reply: Mapping[str, Any]) -> RecordListing:
    """The listing of an rs_list reply (already checked by the JSOC client)."""
    columns: dict[str, list[Any]] = {}
    for column in reply.get("keywords") or []:
        columns.setdefault(str(column.get("name", "")).upper(), list(column.get("values") or []))
    return RecordListing([str(r.get("name", "")) for r in reply.get("recinfo") or []], columns)
