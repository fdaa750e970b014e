"""Where a file goes: the job's path_template rendered with the file's values, kept under the
download root.

Values: ``series``, ``record`` (the record spec), ``segment``, ``filename`` (the export's file
name), the record's prime-key values parsed from the record string (time keys as datetimes, so
``{T_REC:%Y/%m/%d}`` works), and, when the template names them, keywords and ``recnum``
looked up with rs_list.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from service.download.paths import check_relative_name
from service.jobspec import BUILTIN_TEMPLATE_FIELDS, render_path, template_fields
from service.jsoc.listing import parse_listing
from service.jsoc.metadata import SeriesMeta
from service.jsoc.records import split_record
from service.timeutil import TimeFormatError, parse_calendar

RECORD_FIELDS = ("series", "record", "segment", "filename")


class PlacementError(ValueError):
    """A file's destination cannot be rendered or would leave the download root."""


def _time_value(text: str) -> datetime | str:
    try:
        return parse_calendar(text)[0]
    except TimeFormatError:
        return text


def record_values(record: str, meta: SeriesMeta) -> dict[str, Any]:
    """Prime-key values of a record spec, in the series' prime-key order (time keys as the
    calendar datetime written in the record, e.g. a TAI calendar for T_REC)."""
    _series, values = split_record(record)
    out: dict[str, Any] = {}
    for key, value in zip(meta.primekeys, values, strict=False):
        out[key.name] = _time_value(value) if key.is_time else value
    return out


def lookup_fields(template: str, meta: SeriesMeta) -> list[str]:
    """Template fields that need an rs_list lookup: keywords (not prime keys) and recnum."""
    primes = {p.upper() for p in meta.primekey_names}
    plain = {f.upper() for f in RECORD_FIELDS}
    needed = []
    for name, _spec in template_fields(template):
        upper = name.upper()
        if upper in plain or upper in primes or name in needed:
            continue
        if upper == "RECNUM" or upper not in {f.upper() for f in BUILTIN_TEMPLATE_FIELDS}:
            needed.append(name)
    return needed


def rs_list_keys(fields: list[str]) -> list[str]:
    """rs_list key names for lookup fields (``recnum`` is the pseudo-key ``*recnum*``)."""
    return ["*recnum*" if f.upper() == "RECNUM" else f for f in fields]


def keyword_table(reply: Mapping[str, Any], fields: list[str]) -> dict[str, dict[str, Any]]:
    """record name (lower case) -> {field: value} from an rs_list reply made with ``R=1``."""
    return parse_listing(reply).table(dict(zip(fields, rs_list_keys(fields), strict=True)))


def destination(template: str, *, meta: SeriesMeta, record: str, segment: str | None,
                filename: str, extra: Mapping[str, Any] | None = None) -> str:
    """The file's path relative to the download root; PlacementError says what is wrong."""
    series, _ = split_record(record)
    values: dict[str, Any] = {"series": series or meta.name, "record": record,
                              "filename": filename}
    if segment:
        values["segment"] = segment
    values.update(record_values(record, meta))
    values.update(extra or {})
    try:
        path = render_path(template, values)
        check_relative_name(path)
    except ValueError as exc:
        raise PlacementError(f"cannot place {record}{{{segment or ''}}} ({filename}) with "
                             f"path_template {template!r}: {exc}") from None
    return path
