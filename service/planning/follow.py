"""Follow mode's arithmetic on a job's timeline (the stage, ``service/stages/follow.py``, asks
JSOC and stores): how often to check, how far back late records are looked for, which slots of
a re-checked window gained records, and the small chunks that name exactly those slots.

Slots are counted from JSOC's frontier (the slot after its newest record), never from this
machine's clock. ``settled`` is the first slot still worth re-checking: older slots were last
looked at when JSOC's newest data were already ``recheck_window`` newer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from service.jobspec import JobSpec
from service.jsoc.metadata import SeriesMeta
from service.planning.chunks import multiplicity
from service.planning.cursor import JobEstimate
from service.planning.recordsets import list_group, recordset_template
from service.planning.stored import NewChunk
from service.planning.timeline import Timeline
from service.timeutil import format_tai, parse_time

DEFAULT_CHECK_INTERVAL = 600.0  # seconds between checks without check_interval
MIN_RECHECK_WINDOW = 3600.0  # re-check at least the last hour of JSOC's data
RECHECK_LAG_FACTOR = 4.0  # … or this many times the lag
RECHECK_MAX_RECORDS = 5000  # records listed per check (a long window is taken in parts)
MAX_LIST_CHARS = 6000  # length of one re-check chunk's recordset (JSOC's limit is 8192)
SAMPLE_SLOTS = 10  # slots sampled to estimate records per slot and bytes per record


def check_interval(spec: JobSpec, poll_min: float) -> float:
    """Seconds between checks: the job's, never faster than the poll floor (poll_min)."""
    return max(spec.check_interval_seconds or DEFAULT_CHECK_INTERVAL, poll_min)


def recheck_window(spec: JobSpec) -> float:
    """How far behind JSOC's newest data late records are still looked for."""
    return max(RECHECK_LAG_FACTOR * (spec.lag_seconds or 0.0), MIN_RECHECK_WINDOW)


def sample_spec(spec: JobSpec, tl: Timeline, frontier: int) -> JobSpec:
    """The first few slots of a follow job that JSOC has data for, as a bounded job."""
    end = min(tl.first + SAMPLE_SLOTS * tl.stride, frontier)  # excluded
    return spec.model_copy(update={"end": format_tai(tl.time(end - 1)), "follow": False,
                                   "lag": None, "check_interval": None})


def lagged_until(spec: JobSpec, tl: Timeline, frontier: int) -> float:
    """The ``until`` of the job's range: JSOC's newest slot minus the job's lag."""
    target = tl.index(tl.time(frontier - 1) - (spec.lag_seconds or 0.0)) + 1
    return tl.until(target)


@dataclass
class Check:
    """What a plan call knows: JSOC's frontier, the settled mark and late slots found."""

    frontier: int | None  # slot after JSOC's newest record
    settled: int
    late: list[int]

    def quiet_from(self, tl: Timeline, spec: JobSpec) -> int:
        """Slots before this one are older than JSOC's newest data minus the window."""
        assert self.frontier is not None
        return tl.index(tl.time(self.frontier - 1) - recheck_window(spec)) + 1

    def settle_planned(self, tl: Timeline, spec: JobSpec, before: int, cursor: str) -> None:
        """Chunks planned from ``before`` up to ``cursor`` while that part was already quiet:
        nothing late can appear there, so the settled mark moves with the cursor."""
        if self.settled >= before:
            self.settled = max(self.settled, min(tl.slot_of(cursor, tl.first),
                                                 self.quiet_from(tl, spec)))


def recheck_slots(spec: JobSpec, meta: SeriesMeta, tl: Timeline, est: JobEstimate,
                  check: Check, planned_until: str, unlisted_starts: list[str]) -> range:
    """The sampled slots to re-check: from the settled mark up to the first chunk whose files
    are not listed yet (or the cursor), at most ``RECHECK_MAX_RECORDS`` records' worth."""
    end = min([tl.slot_of(planned_until, tl.first),
               *(tl.slot_of(t, tl.first) for t in unlisted_starts)])
    start = tl.sampled_from(check.settled)
    rps = est.records_per_slot or float(multiplicity(spec, meta))
    end = min(end, start + max(1, math.floor(RECHECK_MAX_RECORDS / max(rps, 1e-9))) * tl.stride)
    return range(start, max(start, end), tl.stride)


def late_in(tl: Timeline, records: Iterable[tuple[str, float | None]], held: set[str],
            failed: Iterable[tuple[str, str]]) -> list[int]:
    """Slots where JSOC lists a record (lower-case name, time) that the job holds no file row
    for (``held``) and no failed chunk covers. A record whose time could not be read (None:
    JSOC's MISSING) has no slot, so no chunk can name it: it is left out (the stage logs it),
    and every other record keeps its own time."""
    spans = [(parse_time(a), parse_time(b)) for a, b in failed]
    found = set()
    for name, tai in records:
        if tai is not None and name not in held and not any(a <= tai < b for a, b in spans):
            found.add(tl.index(tai))
    return sorted(found)


def _batches(tl: Timeline, slots: list[int], per_chunk: int) -> list[list[int]]:
    batches: list[list[int]] = []
    length = 0
    for slot in slots:
        text = len(format_tai(tl.time(slot))) + 1
        if not batches or len(batches[-1]) >= per_chunk or length + text > MAX_LIST_CHARS:
            batches.append([])
            length = 0
        batches[-1].append(slot)
        length += text
    return batches


def late_chunks(spec: JobSpec, meta: SeriesMeta, tl: Timeline, est: JobEstimate,
                slots: list[int], max_records: int) -> list[NewChunk]:
    """Chunks naming exactly ``slots`` (time-key value lists), each within the limits."""
    template = recordset_template(spec, meta)
    rps = est.records_per_slot or float(multiplicity(spec, meta))
    chunks = []
    for batch in _batches(tl, slots, max(1, math.floor(max_records / rps))):
        records = max(1, round(len(batch) * rps))
        chunks.append(NewChunk(
            template.render(list_group(tl.time(s) for s in batch)),
            format_tai(tl.time(batch[0])), format_tai(tl.time(batch[-1] + 1)),
            records, records * est.bytes_per_record))
    return chunks
