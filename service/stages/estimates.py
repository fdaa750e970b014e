"""A job's size estimates, asked of JSOC once per job and kept in the stage context: records
per slot (``rs_summary`` of a sample of slots) and bytes per record (``rs_list *size*`` of a
few sample records)."""

from __future__ import annotations

import asyncio

from service.jobspec import JobSpec
from service.jsoc.listing import SIZE_KEY, parse_listing
from service.jsoc.metadata import SeriesMeta
from service.planning.chunks import sample_recordset
from service.planning.cursor import JobEstimate
from service.stages.context import StageContext

SIZE_SAMPLE_RECORDS = 4


async def estimate(ctx: StageContext, job_id: str, spec: JobSpec,
                   meta: SeriesMeta) -> JobEstimate:
    """Records per slot and bytes per record of the job; cached per job."""
    if job_id in ctx.estimates:
        return ctx.estimates[job_id]
    if spec.recordset is not None:
        sample, slots = spec.recordset, 0
    else:
        sample, slots = sample_recordset(spec, meta)
    count, reply = await asyncio.gather(  # two round trips at once
        ctx.jsoc.rs_summary(sample),
        ctx.jsoc.rs_list(sample, keys=[SIZE_KEY], n=SIZE_SAMPLE_RECORDS))
    per_record = parse_listing(reply).mean_size() if count else 0
    result = JobEstimate(records_per_slot=(count / slots) if slots and count else None,
                         bytes_per_record=per_record)
    ctx.estimates[job_id] = result
    return result
