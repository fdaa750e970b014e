"""Record strings as JSOC writes them: ``series[value][value]…{segment}``, read in one place
(file placement, manifests and url_quick file names all take them apart here)."""

from __future__ import annotations

import re

_GROUP = re.compile(r"\[([^\]]*)\]")
_SEGMENT_SUFFIX = re.compile(r"\{([^{}]*)\}\s*$")


def split_record(record: str) -> tuple[str, list[str]]:
    """``hmi.M_45s[2014.01.01_00:00:00_TAI][2]{magnetogram}`` -> (series, [values])."""
    body = record.split("{", 1)[0]
    series = body.split("[", 1)[0].strip()
    return series, [v.strip() for v in _GROUP.findall(body)]


def split_segment(record: str) -> tuple[str, str | None]:
    """`hmi.V_45s[…][2]{Dopplergram}` -> (`hmi.V_45s[…][2]`, `Dopplergram`)."""
    match = _SEGMENT_SUFFIX.search(record)
    if not match:
        return record, None
    return record[: match.start()], match.group(1) or None
