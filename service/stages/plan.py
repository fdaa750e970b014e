"""Planning stage: turn running jobs into a few chunks at a time (lazy, slot-aligned).

A job's cursor (``planned_until``) is the JSOC TAI time of the next sampled slot to plan, so
chunk boundaries never overlap or leave gaps even if the size estimates change between calls.
A job with enough open chunks (exporting, ready, downloading) is held back — its plan lease is
kept and looked at again later — so planning stays only a few chunks ahead of the downloads.
Follow jobs (no end: mirrors) are planned by ``follow.plan_follow`` on the same chunking.
The chunks themselves are computed by ``service.planning``; this stage claims, asks JSOC and
stores.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from service.db.repo import (
    InvalidTransition,
    LeaseLost,
    LeaseToken,
    NotFound,
    PlanClaim,
    StoredChunk,
)
from service.jobspec import JobSpec, SpecError
from service.jsoc.lookups import check_email
from service.jsoc.metadata import SeriesMeta
from service.jsoc.status import JsocError, JsocTransientError, StatusKind
from service.ops import metrics
from service.ops.logs import log_context
from service.planning.chunks import ChunkSplitError
from service.planning.cursor import PLAN_BATCH, next_chunks
from service.planning.stored import new_chunk, split_children, stored_chunk_plan
from service.stages.context import StageContext
from service.stages.estimates import estimate
from service.stages.follow import plan_follow
from service.stages.reply_errors import note_malformed
from service.states import JOB_UNPAUSED
from service.validation import parse_job_spec

log = logging.getLogger(__name__)

MAX_AHEAD = 2  # a job is claimed for planning while it has fewer planned chunks than this
MAX_OPEN_CHUNKS = 3  # exporting/ready/downloading chunks before planning holds back


@dataclass
class HeldPlan:
    """A job whose plan lease this worker holds while it waits (backpressure, JSOC down)."""

    claim: PlanClaim
    recheck_at: float  # loop time


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
    except (InvalidTransition, NotFound, LeaseLost) as exc:  # cancelled, paused, deleted or
        # taken over by another worker meanwhile
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
    with contextlib.suppress(LeaseLost):  # another worker holds the plan lease: nothing to do
        await ctx.repo.advance_plan(claim.job_id, planned_until=claim.planned_until,
                                    next_seq=claim.next_seq, plan_done=False,
                                    lease_token=claim.lease_token)


async def plan_job(ctx: StageContext, claim: PlanClaim) -> float | None:
    """Plan the next chunks of a claimed job; returns seconds to hold it back instead."""
    status = await ctx.repo.plan_status(claim.job_id)
    if status.state not in JOB_UNPAUSED:
        await _release(ctx, claim)
        return None
    if status.open_chunks >= MAX_OPEN_CHUNKS:
        return ctx.idle_seconds * 4
    if ctx.host_open(ctx.settings.jsoc_url):
        return max(ctx.jsoc_breaker.retry_in(), ctx.idle_seconds)
    spec = parse_job_spec(claim.spec)
    meta = await ctx.jsoc.series_struct(spec.series_name)
    ctx.jsoc_breaker.record_success()
    if claim.planned_until is None and claim.next_seq == 0:
        await confirm_notify(ctx, status.notify_email)
    if spec.follow:
        await plan_follow(ctx, claim, spec, meta)
        return None
    est = await estimate(ctx, claim.job_id, spec, meta)
    chunks, cursor, done = next_chunks(
        spec, meta, est, claim.planned_until, limit=PLAN_BATCH,
        max_records=ctx.settings.max_chunk_records, max_bytes=ctx.settings.max_chunk_bytes)
    rows = [new_chunk(c, claim.next_seq + i).row() for i, c in enumerate(chunks)]
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


def _loop_time() -> float:
    return asyncio.get_running_loop().time()


async def split_or_fail(ctx: StageContext, spec: JobSpec, meta: SeriesMeta, *, export_id: int,
                        chunk_id: int, chunk: StoredChunk, reason: str,
                        chunk_token: LeaseToken, export_token: LeaseToken) -> None:
    """JSOC called the chunk too large (status 3): replace it by two halves, or fail it with
    JSOC's message when it cannot be halved (one slot, or a raw recordset). Raises LeaseLost
    when the export's lease was taken over; a split another worker made already is skipped."""
    plan = stored_chunk_plan(spec, meta, chunk)
    try:
        children = [half.row() for half in split_children(plan)]
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
