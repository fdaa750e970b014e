"""A job planned a few chunks at a time from its cursor.

The cursor (``planned_until``) is the JSOC TAI time of the first sampled slot not planned yet,
so the chunks of successive calls are consecutive half-open pieces of the job's range: none
overlaps or leaves a gap, even when the size estimates change between calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice

from service.jobspec import JobSpec
from service.jsoc.metadata import SeriesMeta
from service.planning.chunks import ChunkPlan, chunks_over, plan_chunks
from service.planning.timeline import job_slots, remaining, timeline
from service.timeutil import format_tai

PLAN_BATCH = 2  # chunks planned per claim
END_MARK = "end"  # planned_until of a finished recordset job


@dataclass
class JobEstimate:
    """Planning estimates of one job (kept in memory; re-sampled after a restart)."""

    records_per_slot: float | None
    bytes_per_record: int


def next_chunks(spec: JobSpec, meta: SeriesMeta, estimate: JobEstimate,
                planned_until: str | None, *, limit: int, max_records: int, max_bytes: int,
                until: float | None = None) -> tuple[list[ChunkPlan], str | None, bool]:
    """The next ``limit`` chunks after the cursor: (chunks, new cursor, planning done).
    ``until`` (TAI seconds, excluded) ends a follow job's range."""
    if spec.recordset is not None:
        if planned_until is not None:
            return [], planned_until, True
        chunks = list(plan_chunks(spec, meta, bytes_per_record=estimate.bytes_per_record))
        return chunks, END_MARK, True
    whole = job_slots(spec, meta, until)
    tl = timeline(spec, meta)
    rest = whole
    if planned_until is not None:
        rest = remaining(whole, tl.slot_of(planned_until, whole.start))
    if not rest:
        return [], planned_until, True
    chunks = list(islice(chunks_over(
        spec, meta, rest, max_records=max_records, max_bytes=max_bytes,
        bytes_per_record=estimate.bytes_per_record,
        records_per_slot=estimate.records_per_slot), limit))
    last = chunks[-1]
    after = last.first_slot + last.slot_count * last.stride
    return chunks, format_tai(tl.time(after)), not remaining(whole, after)
