"""What a job spec means before it is submitted: record count, bytes, exports, first and last
record and record-set strings, from JSOC's ``rs_summary`` and ``rs_list`` (no per-file rows).

The count is JSOC's for the job's record-set string (sunpy's ``start-end`` form); bytes are the
mean ``*size*`` of a few records times the count; exports are the chunks the planner would cut
the range into at that mean density. A follow job is previewed up to JSOC's newest record.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from itertools import islice

from service.jobspec import JobSpec
from service.jsoc.client import JsocClient
from service.jsoc.listing import SIZE_KEY, parse_listing
from service.jsoc.lookups import newest_time
from service.jsoc.metadata import SeriesMeta
from service.planning.chunks import chunk_slot_count, chunks_over
from service.planning.recordsets import build_recordset
from service.planning.timeline import job_slots
from service.timeutil import format_tai

SIZE_SAMPLE = 4  # records whose *size* is averaged
SHOWN_EXPORTS = 5  # export record sets listed


@dataclass
class Preview:
    """The answer of POST /jobs/preview and ``submit --dry-run``."""

    recordset: str | None
    records: int
    est_bytes: int
    exports: int
    first_record: str | None = None
    last_record: str | None = None
    export_recordsets: list[str] = field(default_factory=list)
    message: str = ""


def empty_message(recordset: str, meta: SeriesMeta) -> str:
    interval = meta.raw.get("Interval") if isinstance(meta.raw.get("Interval"), dict) else {}
    first, last = (interval or {}).get("FirstRecord"), (interval or {}).get("LastRecord")
    known = f"; {meta.name} has records from {first} to {last}" \
        if first and last and first != "NA" else ""
    return f"0 records: JSOC has no records for {recordset}{known}"


def _exports(spec: JobSpec, meta: SeriesMeta, records: int, bytes_per_record: int,
             max_records: int, max_bytes: int) -> tuple[int, list[str]]:
    """How many exports the planner makes of the range, and the first few record sets."""
    if spec.recordset is not None:
        return 1, [spec.recordset]
    slots = job_slots(spec, meta)
    rps = records / len(slots) if slots else 0.0
    per_chunk = chunk_slot_count(rps, bytes_per_record, max_records, max_bytes)
    chunks = chunks_over(spec, meta, slots, max_records=max_records, max_bytes=max_bytes,
                         bytes_per_record=bytes_per_record, records_per_slot=rps or None)
    return math.ceil(len(slots) / per_chunk), [c.recordset for c in islice(chunks, SHOWN_EXPORTS)]


async def preview_job(jsoc: JsocClient, spec: JobSpec, meta: SeriesMeta, *, max_records: int,
                      max_bytes: int) -> Preview:
    """Count and size the job at JSOC without planning or listing its files."""
    if spec.follow:  # a mirror: what its backfill up to JSOC's newest record holds
        newest = await newest_time(jsoc, meta)
        if newest is None:
            return Preview(None, 0, 0, 0, message=f"0 records: {meta.name} has no records yet; "
                           "a mirror would wait for them")
        spec = spec.model_copy(update={"end": format_tai(newest), "follow": False, "lag": None,
                                       "check_interval": None})
    recordset = build_recordset(spec, meta)
    records = await jsoc.rs_summary(recordset)
    if not records:
        return Preview(recordset, 0, 0, 0, message=empty_message(recordset, meta))
    head, tail = await asyncio.gather(
        jsoc.rs_list(recordset, keys=[SIZE_KEY], n=SIZE_SAMPLE, rec_index=True),
        jsoc.rs_list(recordset, keys=["*recnum*"], n=-1, rec_index=True))
    first, last = parse_listing(head), parse_listing(tail)
    per_record = first.mean_size()
    exports, shown = _exports(spec, meta, records, per_record, max_records, max_bytes)
    first_names = [n for n in first.names if n]
    last_names = [n for n in last.names if n]
    return Preview(recordset, records, records * per_record, exports,
                   first_names[0] if first_names else None,
                   last_names[-1] if last_names else None, shown,
                   f"{records} record(s) in about {exports} export(s)")
