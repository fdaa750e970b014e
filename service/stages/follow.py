"""Follow mode (mirroring): plan a job with no end as JSOC's data grow, and fetch records JSOC
publishes late inside ranges already covered.

"Now at JSOC" is learned from JSOC, never from this machine's clock: at each check the newest
record of the series (``series[$]``, ``n=-1``) gives ``jsoc_until``, the end of JSOC's newest
slot. Chunks are planned up to that slot minus the job's ``lag`` — lazily, a batch per claim,
so a mirror that was down for a week catches up in bounded chunks from its stored cursor.

Late records: every check compares JSOC's listing of a window of already covered slots with the
record names of the job's file rows there, and plans one small chunk naming only the slots that
gained records (stored files are never fetched again). The window runs from ``settled_until``
(slots older than that were last looked at when JSOC's newest data were already
``recheck_window`` newer, so nothing more is expected there) to the first chunk whose files are
not listed yet. Slots of failed chunks are left to ``retry``. The arithmetic is in
``service.planning.follow``; this module asks JSOC and stores.
"""

from __future__ import annotations

import logging
from datetime import datetime

from service.db.repo import PlanClaim
from service.db.repo_plan import FollowState
from service.jobspec import JobSpec
from service.jsoc.listing import parse_listing
from service.jsoc.lookups import newest_time
from service.jsoc.metadata import SeriesMeta
from service.planning.cursor import PLAN_BATCH, JobEstimate, next_chunks
from service.planning.follow import (
    Check,
    check_interval,
    lagged_until,
    late_chunks,
    late_in,
    recheck_slots,
    sample_spec,
)
from service.planning.recordsets import window_recordset
from service.planning.stored import NewChunk, new_chunk
from service.planning.timeline import Timeline, timeline
from service.stages.context import StageContext
from service.stages.estimates import estimate
from service.timeutil import format_tai

log = logging.getLogger(__name__)


async def jsoc_frontier(ctx: StageContext, meta: SeriesMeta, tl: Timeline) -> int | None:
    """The slot after JSOC's newest record of the series (None when it has none)."""
    newest = await newest_time(ctx.jsoc, meta)
    return tl.index(newest) + 1 if newest is not None else None


async def late_slots(ctx: StageContext, job_id: str, spec: JobSpec, meta: SeriesMeta,
                     tl: Timeline, slots: range) -> list[int]:
    """Slots in ``slots`` where JSOC lists records the job has no file row for."""
    key = meta.time_key()
    assert key is not None
    reply = await ctx.jsoc.rs_list(window_recordset(spec, meta, tl, slots), keys=[key.name],
                                   rec_index=True)
    records = [(name.strip().lower(), tai)
               for name, tai in parse_listing(reply).record_times(key.name)]
    if not records:
        return []
    untimed = [name for name, tai in records if tai is None]
    if untimed:  # no slot to name them by: a mirror cannot fetch them (late_in skips them)
        log.warning("follow job %s: %d record(s) listed with an unreadable %s (e.g. MISSING) "
                    "are skipped, first %s", job_id, len(untimed), key.name, untimed[0])
    held = await ctx.repo.window_contents(job_id, format_tai(tl.time(slots.start) - 1),
                                          format_tai(tl.time(slots.stop) + 1))
    return late_in(tl, records, held.records, held.failed)


async def follow_estimate(ctx: StageContext, job_id: str, spec: JobSpec, meta: SeriesMeta,
                          tl: Timeline, frontier: int | None) -> JobEstimate:
    """Size estimates from the first slots JSOC has data for (none cached before it has)."""
    if frontier is None or frontier <= tl.first:
        return JobEstimate(records_per_slot=None, bytes_per_record=0)
    return await estimate(ctx, job_id, sample_spec(spec, tl, frontier), meta)


async def recheck(ctx: StageContext, claim: PlanClaim, spec: JobSpec, meta: SeriesMeta,
                  tl: Timeline, state: FollowState, est: JobEstimate, check: Check) -> None:
    """Look for late records in the covered, unsettled window; advance the settled mark."""
    if check.frontier is None or claim.planned_until is None:
        return
    slots = recheck_slots(spec, meta, tl, est, check, claim.planned_until,
                          state.unlisted_starts)
    if not slots:
        return
    check.late = await late_slots(ctx, claim.job_id, spec, meta, tl, slots)
    check.settled = max(check.settled, min(slots.stop, check.quiet_from(tl, spec)))


async def plan_follow(ctx: StageContext, claim: PlanClaim, spec: JobSpec,
                      meta: SeriesMeta) -> None:
    """Plan a follow job: at due checks ask JSOC and re-check; plan new chunks up to JSOC's
    newest slot minus the lag (a batch per claim); store the mirror state."""
    state = await ctx.repo.follow_state(claim.job_id)
    tl = timeline(spec, meta)
    now = ctx.now()
    due = state.next_check_at is None or state.next_check_at <= now
    check = Check(None, tl.slot_of(state.settled_until, tl.first), [])
    if due:
        check.frontier = await jsoc_frontier(ctx, meta, tl)
    elif state.jsoc_until is not None:
        check.frontier = tl.slot_of(state.jsoc_until, tl.first)
    est = await follow_estimate(ctx, claim.job_id, spec, meta, tl, check.frontier)
    if due:
        await recheck(ctx, claim, spec, meta, tl, state, est, check)
    chunks = late_chunks(spec, meta, tl, est, check.late, ctx.settings.max_chunk_records)
    cursor, done = claim.planned_until, True
    if check.frontier is not None:
        planned, cursor, done = next_chunks(
            spec, meta, est, claim.planned_until, limit=PLAN_BATCH,
            max_records=ctx.settings.max_chunk_records,
            max_bytes=ctx.settings.max_chunk_bytes,
            until=lagged_until(spec, tl, check.frontier))
        chunks += [new_chunk(c) for c in planned]
        if cursor is not None:
            check.settle_planned(tl, spec, tl.slot_of(claim.planned_until, tl.first), cursor)
    numbered = [c.numbered(claim.next_seq + i) for i, c in enumerate(chunks)]
    await _store(ctx, claim, spec, tl, numbered, cursor, done, check, now if due else None)


async def _store(ctx: StageContext, claim: PlanClaim, spec: JobSpec, tl: Timeline,
                 chunks: list[NewChunk], cursor: str | None, done: bool, check: Check,
                 checked_at: datetime | None) -> None:
    """Insert the chunks and store the cursor and the mirror state (fenced by the lease)."""
    if chunks:
        await ctx.repo.add_chunks(claim.job_id, [c.row() for c in chunks])
    frontier = None if check.frontier is None else format_tai(tl.time(check.frontier))
    interval = check_interval(spec, ctx.settings.poll_min)
    await ctx.repo.advance_plan(
        claim.job_id, planned_until=cursor, next_seq=claim.next_seq + len(chunks),
        plan_done=done, lease_token=claim.lease_token, covered_until=cursor,
        next_check_at=ctx.later(interval) if checked_at else None,
        last_check_at=checked_at, jsoc_until=frontier if checked_at else None,
        settled_until=format_tai(tl.time(check.settled)))
    if chunks:
        log.info("follow job %s: planned chunks %d..%d (late records in %d slot(s))",
                 claim.job_id, claim.next_seq, claim.next_seq + len(chunks) - 1, len(check.late))
        ctx.wakers.poke("submit")
