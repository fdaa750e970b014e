"""Planning stage: turn running jobs into a few chunks at a time (lazy, slot-aligned).

A job's cursor (``planned_until``) is the JSOC TAI time of the next sampled slot to plan, so
chunk boundaries never overlap or leave gaps even if the size estimates change between calls.
A job with enough open chunks (exporting, ready, downloading) is held back — its plan lease is
kept and looked at again later — so planning stays only a few chunks ahead of the downloads.
Follow jobs (no end: mirrors) are planned by ``follow.plan_follow`` on the same chunking.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from itertools import islice
from typing import Any

from pydantic import ValidationError

from service.db.repo import InvalidTransition, LeaseLost, NotFound, PlanClaim
from service.jobspec import JobSpec, SpecError
from service.jsoc.lookups import check_email, record_sizes
from service.jsoc.metadata import SeriesMeta
from service.jsoc.status import JsocError, JsocTransientError, StatusKind
from service.ops import metrics
from service.ops.logs import log_context
from service.planner import (
    ChunkPlan,
    ChunkSplitError,
    by_value_end,
    chunks_over,
    job_slots,
    multiplicity,
    plan_chunks,
    recordset_template,
    sample_recordset,
    slot_grid,
    split_chunk,
)
from service.stages.context import JobEstimate, StageContext
from service.stages.reply_errors import note_malformed
from service.timeutil import (
    cadence_stride,
    format_tai,
    parse_time,
    slot_index,
    slot_time,
)
from service.validation import format_errors

log = logging.getLogger(__name__)

PLAN_BATCH = 2  # chunks planned per claim
MAX_AHEAD = 2  # a job is claimed for planning while it has fewer planned chunks than this
MAX_OPEN_CHUNKS = 3  # exporting/ready/downloading chunks before planning holds back
SIZE_SAMPLE_RECORDS = 4
END_MARK = "end"  # planned_until of a finished recordset job


@dataclass
class HeldPlan:
    """A job whose plan lease this worker holds while it waits (backpressure, JSOC down)."""

    claim: PlanClaim
    recheck_at: float  # loop time


def job_spec(raw: dict[str, Any]) -> JobSpec:
    """The stored spec as a JobSpec; SpecError with clear messages if it no longer parses."""
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(format_errors(exc)) from None


# --- pure planning ------------------------------------------------------------------------------

def job_range(spec: JobSpec, meta: SeriesMeta, until: float | None = None) -> range:
    """Sampled slot indices of the whole job (a follow job: up to ``until``, excluded)."""
    return job_slots(spec, meta, until)


def remaining(whole: range, first_slot: int) -> range:
    """The sampled slots of ``whole`` at or after slot ``first_slot``."""
    if first_slot <= whole.start:
        return whole
    return whole[-(-(first_slot - whole.start) // whole.step):]


def next_chunks(spec: JobSpec, meta: SeriesMeta, estimate: JobEstimate,
                planned_until: str | None, *, limit: int, max_records: int, max_bytes: int,
                until: float | None = None) -> tuple[list[ChunkPlan], str | None, bool]:
    """The next ``limit`` chunks after the cursor: (chunks, new cursor, planning done).

    The cursor is the time of the first slot not planned yet, so the chunks of successive
    calls are consecutive half-open pieces of the job's range: none overlaps or leaves a gap.
    """
    if spec.recordset is not None:
        if planned_until is not None:
            return [], planned_until, True
        chunks = list(plan_chunks(spec, meta, bytes_per_record=estimate.bytes_per_record))
        return chunks, END_MARK, True
    whole = job_range(spec, meta, until)
    key = meta.time_key()
    assert key is not None and spec.start_tai is not None
    grid = slot_grid(meta, key, spec.start_tai)
    rest = whole
    if planned_until is not None:
        rest = remaining(whole, slot_index(parse_time(planned_until), grid.epoch, grid.step,
                                           grid.round_))
    if not rest:
        return [], planned_until, True
    chunks = list(islice(chunks_over(
        spec, meta, rest, max_records=max_records, max_bytes=max_bytes,
        bytes_per_record=estimate.bytes_per_record,
        records_per_slot=estimate.records_per_slot), limit))
    last = chunks[-1]
    after = last.first_slot + last.slot_count * last.stride
    cursor_tai = slot_time(after, grid.epoch, grid.step)
    return chunks, format_tai(cursor_tai), not remaining(whole, after)


def chunk_row(chunk: ChunkPlan, seq: int | None = None) -> dict[str, Any]:
    """A chunk as ``add_chunks`` / ``split_chunk`` take it (end_time = start + duration)."""
    end = None
    if chunk.start is not None and chunk.duration is not None:
        end = format_tai(parse_time(chunk.start) + chunk.duration)
    row = {"recordset": chunk.recordset, "start_time": chunk.start, "end_time": end,
           "est_records": chunk.est_records, "est_bytes": chunk.est_bytes}
    return row if seq is None else {"seq": seq, **row}


def stored_chunk_plan(spec: JobSpec, meta: SeriesMeta, *, seq: int, part: str, recordset: str,
                      start_time: str | None, end_time: str | None,
                      est_bytes: int | None) -> ChunkPlan:
    """Rebuild the ChunkPlan of a stored chunk (what ``planner.split_chunk`` needs)."""
    key = meta.time_key()
    if spec.recordset is not None or key is None or spec.start_tai is None \
            or start_time is None or end_time is None:
        return ChunkPlan(seq=seq, part=part, recordset=recordset, start=start_time,
                         duration=None, est_records=0, est_bytes=est_bytes or 0)
    grid = slot_grid(meta, key, spec.start_tai)
    start, span = parse_time(start_time), parse_time(end_time) - parse_time(start_time)
    stride = cadence_stride(spec.cadence_seconds, grid.step)
    until = by_value_end(spec, key)
    count = max(1, math.ceil(span / grid.step - 1e-6) if until is not None
                else round((span / grid.step - 1) / stride) + 1)
    template = recordset_template(spec, meta)
    rps = float(multiplicity(spec, meta))
    records = max(1, round(count * rps))
    return ChunkPlan(
        seq=seq, part=part, recordset=recordset, start=start_time, duration=span,
        est_records=records, est_bytes=est_bytes or 0,
        first_slot=slot_index(start, grid.epoch, grid.step, grid.round_), slot_count=count,
        stride=stride, grid=(grid.epoch, grid.step, grid.round_), cadence=spec.cadence_seconds,
        prefix=template.prefix, suffix=template.suffix, records_per_slot=rps,
        bytes_per_record=(est_bytes or 0) // records, until=until)


# --- estimates ----------------------------------------------------------------------------------

async def estimate(ctx: StageContext, job_id: str, spec: JobSpec,
                   meta: SeriesMeta) -> JobEstimate:
    """Records per slot (rs_summary of a sample of slots) and bytes per record (rs_list
    ``*size*`` of a few sample records); cached per job."""
    if job_id in ctx.estimates:
        return ctx.estimates[job_id]
    if spec.recordset is not None:
        sample, slots = spec.recordset, 0
    else:
        sample, slots = sample_recordset(spec, meta)
    count, listing = await asyncio.gather(  # two round trips at once
        ctx.jsoc.rs_summary(sample),
        ctx.jsoc.rs_list(sample, keys=["*size*"], n=SIZE_SAMPLE_RECORDS))
    sizes = record_sizes(listing) if count else []
    result = JobEstimate(records_per_slot=(count / slots) if slots and count else None,
                         bytes_per_record=sum(sizes) // len(sizes) if sizes else 0)
    ctx.estimates[job_id] = result
    return result


# --- the stage ----------------------------------------------------------------------------------

async def plan_tick(ctx: StageContext) -> bool:
    """Look again at held jobs, then claim and plan jobs until none needs planning."""
    did = await _recheck_held(ctx)
    while not ctx.stop.is_set():
        claim = await ctx.repo.claim_job_to_plan(
            ctx.worker_id, lease_seconds=ctx.settings.lease_seconds, max_ahead=MAX_AHEAD)
        if claim is None:
            break
        did = True
        await _handle(ctx, claim)
    return did


async def _recheck_held(ctx: StageContext) -> bool:
    loop_now = _loop_time()
    due = [h for h in ctx.held_plans.values() if h.recheck_at <= loop_now]
    for held in due:
        del ctx.held_plans[held.claim.job_id]
        await _handle(ctx, held.claim)
    return bool(due)


async def _handle(ctx: StageContext, claim: PlanClaim) -> None:
    with log_context(job=claim.job_id):
        await _plan(ctx, claim)


async def _plan(ctx: StageContext, claim: PlanClaim) -> None:
    ctx.holding["planning"].add(claim.job_id)
    try:
        delay = await plan_job(ctx, claim)
    except SpecError as exc:
        await _fail(ctx, claim, f"cannot plan this job: {exc}")
        return
    except NotifyRefused as exc:
        await _fail(ctx, claim, str(exc))
        return
    except JsocError as exc:
        if exc.kind is StatusKind.TRANSIENT:
            ctx.jsoc_breaker.record_failure()
            metrics.RETRIES.labels("plan").inc()
            delay = ctx.retry_delay(1, getattr(exc, "retry_after", None))
            log.warning("planning job %s waits: %s", claim.job_id, exc)
            await note_malformed(ctx, claim.job_id, exc, "planning")
        else:
            await _fail(ctx, claim, f"JSOC refused to describe the job's records: {exc}")
            return
    except (InvalidTransition, NotFound) as exc:  # cancelled, paused or deleted meanwhile
        log.info("planning job %s stopped: %s", claim.job_id, exc)
        delay = None
    except Exception:  # e.g. a database hiccup: keep the lease, look again later
        log.exception("planning job %s failed; trying again later", claim.job_id)
        delay = ctx.retry_delay(3)
    if delay is None:
        ctx.holding["planning"].discard(claim.job_id)
    else:
        ctx.held_plans[claim.job_id] = HeldPlan(claim, _loop_time() + delay)


async def _fail(ctx: StageContext, claim: PlanClaim, message: str) -> None:
    ctx.holding["planning"].discard(claim.job_id)
    try:
        await ctx.repo.fail_job(claim.job_id, message)
    except Exception:  # the job was cancelled or deleted meanwhile
        log.info("job %s could not be failed (state changed)", claim.job_id, exc_info=True)
    await _release(ctx, claim)


async def _release(ctx: StageContext, claim: PlanClaim) -> None:
    await ctx.repo.advance_plan(claim.job_id, planned_until=claim.planned_until,
                                next_seq=claim.next_seq, plan_done=False,
                                lease_token=claim.lease_token)


async def plan_job(ctx: StageContext, claim: PlanClaim) -> float | None:
    """Plan the next chunks of a claimed job; returns seconds to hold it back instead."""
    status = await ctx.repo.plan_status(claim.job_id)
    if status.state not in ("queued", "running"):
        await _release(ctx, claim)
        return None
    if status.open_chunks >= MAX_OPEN_CHUNKS:
        return ctx.idle_seconds * 4
    if ctx.host_open(ctx.settings.jsoc_url):
        return max(ctx.jsoc_breaker.retry_in(), ctx.idle_seconds)
    spec = job_spec(claim.spec)
    meta = await ctx.jsoc.series_struct(spec.series_name)
    ctx.jsoc_breaker.record_success()
    if claim.planned_until is None and claim.next_seq == 0:
        await confirm_notify(ctx, status.notify_email)
    if spec.follow:
        from service.stages.follow import plan_follow  # follow builds on this module

        await plan_follow(ctx, claim, spec, meta)
        return None
    est = await estimate(ctx, claim.job_id, spec, meta)
    chunks, cursor, done = next_chunks(
        spec, meta, est, claim.planned_until, limit=PLAN_BATCH,
        max_records=ctx.settings.max_chunk_records, max_bytes=ctx.settings.max_chunk_bytes)
    rows = [chunk_row(c, claim.next_seq + i) for i, c in enumerate(chunks)]
    if rows:
        await ctx.repo.add_chunks(claim.job_id, rows)
    await ctx.repo.advance_plan(
        claim.job_id, planned_until=cursor, next_seq=claim.next_seq + len(rows), plan_done=done,
        lease_token=claim.lease_token)
    if rows:
        log.info("job %s: planned chunks %d..%d", claim.job_id, claim.next_seq,
                 claim.next_seq + len(rows) - 1)
        ctx.wakers.poke("submit")
    return None


class NotifyRefused(Exception):
    """JSOC refuses the job's notify address (unregistered, pending or invalid)."""


async def confirm_notify(ctx: StageContext, email: str) -> None:
    """Before a job's first export: JSOC must accept its notify address (checked at submit
    too, cached; a job accepted while JSOC was unreachable is checked here). Waits while JSOC
    cannot be asked; an address check that fails otherwise is left to JSOC's export."""
    verdict = await check_email(ctx.jsoc, email)
    if verdict.outcome == "refused":
        raise NotifyRefused(verdict.message)
    if verdict.outcome == "unreachable":
        raise JsocTransientError(verdict.message)


def split_children(plan: ChunkPlan) -> list[dict[str, Any]]:
    """The two halves of a chunk JSOC called too large, as split_chunk rows."""
    return [chunk_row(half) for half in split_chunk(plan)]


def _loop_time() -> float:
    return asyncio.get_running_loop().time()



async def split_or_fail(ctx: StageContext, spec: JobSpec, meta: SeriesMeta, *, export_id: int,
                        chunk_id: int, chunk: dict[str, Any], reason: str,
                        chunk_token: int | None, export_token: int | None) -> None:
    """JSOC called the chunk too large (status 3): replace it by two halves, or fail it with
    JSOC's message when it cannot be halved (one slot, or a raw recordset).

    ``chunk``: seq, part, recordset, start_time, end_time, est_bytes of the stored chunk.
    """
    plan = stored_chunk_plan(spec, meta, **chunk)
    try:
        children = split_children(plan)
    except ChunkSplitError as exc:
        await ctx.repo.fail_export(export_id, error=f"{reason}; {exc}", jsoc_status=3,
                                   lease_token=export_token)
        return
    try:
        await ctx.repo.split_chunk(chunk_id, children, lease_token=chunk_token, reason=reason)
    except LeaseLost as exc:
        log.info("split of chunk %s skipped: %s", chunk_id, exc)
        return
    log.info("chunk %s (%s) split in two: %s", chunk_id, plan.recordset, reason)
    ctx.wakers.poke("submit")
