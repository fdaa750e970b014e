"""Record-set strings (docs/jsoc-protocol.md §6.1, §6.4): the whole job as sunpy writes it,
a chunk's ``start/duration[@cadence]``, a list of slot times, a window of a mirror, and a
series' newest record.

A job's prime-key groups are written in the series' declared order (``[]`` for keys the job
does not restrict), then ``[? where ?]`` and ``{segments}``; the time key's group is a hole
(``RecordsetTemplate``) that each use fills.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from service.jobspec import JobSpec, SpecError, format_value
from service.jsoc.metadata import SeriesMeta
from service.planning.timeline import Timeline
from service.timeutil import format_duration, format_tai


@dataclass(frozen=True)
class RecordsetTemplate:
    """A record-set string with a hole for the time group: ``prefix + time_group + suffix``."""

    prefix: str
    suffix: str

    def render(self, time_group: str) -> str:
        return f"{self.prefix}{time_group}{self.suffix}"


def _group_text(value: Any) -> str:
    values = value if isinstance(value, list) else [value]
    return ",".join(format_value(v) for v in values)


def recordset_template(spec: JobSpec, meta: SeriesMeta) -> RecordsetTemplate:
    """Prime-key groups in declared order (``[]`` for skipped keys, trailing empties dropped),
    then ``[? where ?]`` and ``{segments}``; the time key's group is the hole."""
    time_key = meta.time_key()
    if time_key is None:
        raise SpecError([f"series {meta.name} has no time prime key; use a recordset job"])
    given = {k.upper(): v for k, v in spec.prime_keys.items()}
    if spec.wavelengths:
        given["WAVELNTH"] = list(spec.wavelengths)
    groups = [_group_text(given[pk.name.upper()]) if pk.name.upper() in given else ""
              for pk in meta.primekeys]
    groups[meta.primekey_names.index(time_key.name)] = "\0"
    while groups and groups[-1] == "":
        groups.pop()
    text = meta.name + "".join(f"[{g}]" for g in groups)
    if spec.where:
        text += "[? " + " AND ".join(w.to_sql() for w in spec.where) + " ?]"
    if spec.segments:
        text += "{" + ",".join(spec.segments) + "}"
    prefix, suffix = text.split("\0")
    return RecordsetTemplate(prefix, suffix)


def time_group(start_tai: float, duration: float, cadence: float | None) -> str:
    """``start/duration[@Ns]`` (a chunk: end excluded) with the start as a JSOC TAI string."""
    text = f"{format_tai(start_tai)}/{format_duration(duration)}"
    return text + (f"@{format_value(cadence)}s" if cadence else "")


def range_group(start_tai: float, end_tai: float, cadence: float | None) -> str:
    """``start-end[@Ns]`` in TAI, both ends included: what sunpy's ``a.Time`` (and
    ``a.Sample``) send to JSOC."""
    text = f"{format_tai(start_tai)}-{format_tai(end_tai)}"
    return text + (f"@{format_value(cadence)}s" if cadence else "")


def list_group(times: Iterable[float]) -> str:
    """``t1,t2,…``: exactly these slot times (JSOC TAI strings)."""
    return ",".join(format_tai(t) for t in times)


def build_recordset(spec: JobSpec, meta: SeriesMeta) -> str:
    """The DRMS record-set string of the whole job, as sunpy and drms users write it
    (``series[start-end@cadence]…``, both ends included; a recordset job's own string)."""
    if spec.recordset is not None:
        return spec.recordset
    if spec.start_tai is None or spec.end_tai is None:
        raise SpecError(["a follow job's recordset is built per check, not for the whole job"])
    group = range_group(spec.start_tai, spec.end_tai, spec.cadence_seconds)
    return recordset_template(spec, meta).render(group)


def window_recordset(spec: JobSpec, meta: SeriesMeta, tl: Timeline, slots: range) -> str:
    """The job's records (prime keys, where) in sampled ``slots``, without segments."""
    template = recordset_template(spec.model_copy(update={"segments": None}), meta)
    span = ((len(slots) - 1) * slots.step + 1) * tl.grid.step
    return template.render(time_group(tl.time(slots.start), span, spec.cadence_seconds))


def newest_recordset(meta: SeriesMeta) -> str:
    """``series[$]`` with ``$`` on the time key and every other prime key open."""
    key = meta.time_key()
    groups = ["$" if key is not None and pk.name == key.name else "" for pk in meta.primekeys]
    while groups and groups[-1] == "":
        groups.pop()
    return meta.name + "".join(f"[{g}]" for g in groups)
