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
not listed yet. Slots of failed chunks are left to ``retry``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from service.db.repo import PlanClaim
from service.db.repo_plan import FollowState
from service.jobspec import JobSpec
from service.jsoc.lookups import newest_recordset, time_values
from service.jsoc.metadata import SeriesMeta
from service.planner import SlotGrid, multiplicity, recordset_template, slot_grid, time_group
from service.stages.context import JobEstimate, StageContext
from service.timeutil import (
    cadence_stride,
    format_tai,
    parse_time,
    slot_index,
    slot_time,
)

log = logging.getLogger(__name__)

DEFAULT_CHECK_INTERVAL = 600.0  # seconds between checks without check_interval
MIN_RECHECK_WINDOW = 3600.0  # re-check at least the last hour of JSOC's data
RECHECK_LAG_FACTOR = 4.0  # … or this many times the lag
RECHECK_MAX_RECORDS = 5000  # records listed per check (a long window is taken in parts)
MAX_LIST_CHARS = 6000  # length of one re-check chunk's recordset (JSOC's limit is 8192)
SAMPLE_SLOTS = 10  # slots sampled to estimate records per slot and bytes per record


@dataclass(frozen=True)
class Timeline:
    """A job's sampled slots: the time key's grid, the first sampled slot and the stride."""

    grid: SlotGrid
    first: int
    stride: int
    offset: float  # spec start minus the first slot's time

    def time(self, idx: int) -> float:
        return slot_time(idx, self.grid.epoch, self.grid.step)

    def index(self, tai: float) -> int:
        return slot_index(tai, self.grid.epoch, self.grid.step, self.grid.round_)

    def sampled_from(self, idx: int) -> int:
        """The first sampled slot at or after ``idx``."""
        if idx <= self.first:
            return self.first
        return self.first + math.ceil((idx - self.first) / self.stride) * self.stride

    def until(self, end: int) -> float:
        """The ``until`` time whose job range ends just before slot ``end``."""
        return self.time(end) + self.offset

    def slot_of(self, text: str | None, default: int) -> int:
        return default if text is None else self.index(parse_time(text))


def timeline(spec: JobSpec, meta: SeriesMeta) -> Timeline:
    key = meta.time_key()
    assert key is not None and spec.start_tai is not None
    grid = slot_grid(meta, key, spec.start_tai)
    first = slot_index(spec.start_tai, grid.epoch, grid.step, grid.round_)
    return Timeline(grid, first, cadence_stride(spec.cadence_seconds, grid.step),
                    spec.start_tai - slot_time(first, grid.epoch, grid.step))


def check_interval(ctx: StageContext, spec: JobSpec) -> float:
    """Seconds between checks: the job's, never faster than the poll floor (poll_min)."""
    return max(spec.check_interval_seconds or DEFAULT_CHECK_INTERVAL, ctx.settings.poll_min)


def recheck_window(spec: JobSpec) -> float:
    """How far behind JSOC's newest data late records are still looked for."""
    return max(RECHECK_LAG_FACTOR * (spec.lag_seconds or 0.0), MIN_RECHECK_WINDOW)


def sample_spec(spec: JobSpec, tl: Timeline, frontier: int) -> JobSpec:
    """The first few slots of a follow job that JSOC has data for, as a bounded job."""
    end = min(tl.first + SAMPLE_SLOTS * tl.stride, frontier)  # excluded
    return spec.model_copy(update={"end": format_tai(tl.time(end - 1)), "follow": False,
                                   "lag": None, "check_interval": None})


# --- asking JSOC --------------------------------------------------------------------------------

async def jsoc_frontier(ctx: StageContext, meta: SeriesMeta, tl: Timeline) -> int | None:
    """The slot after JSOC's newest record of the series (None when it has none)."""
    key = meta.time_key()
    assert key is not None
    reply = await ctx.jsoc.rs_list(newest_recordset(meta), keys=[key.name], n=-1)
    times = time_values(reply, key.name)
    return tl.index(max(times)) + 1 if times else None


def window_recordset(spec: JobSpec, meta: SeriesMeta, tl: Timeline, slots: range) -> str:
    """The job's records (prime keys, where) in sampled ``slots``, without segments."""
    template = recordset_template(spec.model_copy(update={"segments": None}), meta)
    span = ((len(slots) - 1) * slots.step + 1) * tl.grid.step
    return template.render(time_group(tl.time(slots.start), span, spec.cadence_seconds))


async def late_slots(ctx: StageContext, job_id: str, spec: JobSpec, meta: SeriesMeta,
                     tl: Timeline, slots: range) -> list[int]:
    """Slots in ``slots`` where JSOC lists records the job has no file row for."""
    key = meta.time_key()
    assert key is not None
    reply = await ctx.jsoc.rs_list(window_recordset(spec, meta, tl, slots), keys=[key.name],
                                   rec_index=True)
    names = [str(r.get("name", "")).strip().lower() for r in reply.get("recinfo") or []]
    times = time_values(reply, key.name)
    if not names:
        return []
    held = await ctx.repo.window_contents(job_id, format_tai(tl.time(slots.start) - 1),
                                          format_tai(tl.time(slots.stop) + 1))
    failed = [(parse_time(a), parse_time(b)) for a, b in held.failed]
    found = set()
    for name, tai in zip(names, times, strict=False):
        if name not in held.records and not any(a <= tai < b for a, b in failed):
            found.add(tl.index(tai))
    return sorted(found)


# --- planning -----------------------------------------------------------------------------------

def late_chunks(spec: JobSpec, meta: SeriesMeta, tl: Timeline, est: JobEstimate,
                slots: list[int], max_records: int) -> list[dict[str, Any]]:
    """Chunks naming exactly ``slots`` (time-key value lists), each within the limits."""
    template = recordset_template(spec, meta)
    rps = est.records_per_slot or float(multiplicity(spec, meta))
    per_chunk = max(1, math.floor(max_records / rps))
    batches: list[list[int]] = []
    length = 0
    for slot in slots:
        text = len(format_tai(tl.time(slot))) + 1
        if not batches or len(batches[-1]) >= per_chunk or length + text > MAX_LIST_CHARS:
            batches.append([])
            length = 0
        batches[-1].append(slot)
        length += text
    rows = []
    for batch in batches:
        records = max(1, round(len(batch) * rps))
        rows.append({"recordset": template.render(",".join(format_tai(tl.time(s))
                                                            for s in batch)),
                     "start_time": format_tai(tl.time(batch[0])),
                     "end_time": format_tai(tl.time(batch[-1] + 1)),
                     "est_records": records, "est_bytes": records * est.bytes_per_record})
    return rows


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


async def follow_estimate(ctx: StageContext, job_id: str, spec: JobSpec, meta: SeriesMeta,
                          tl: Timeline, frontier: int | None) -> JobEstimate:
    """Size estimates from the first slots JSOC has data for (none cached before it has)."""
    from service.stages.plan import estimate

    if frontier is None or frontier <= tl.first:
        return JobEstimate(records_per_slot=None, bytes_per_record=0)
    return await estimate(ctx, job_id, sample_spec(spec, tl, frontier), meta)


async def recheck(ctx: StageContext, claim: PlanClaim, spec: JobSpec, meta: SeriesMeta,
                  tl: Timeline, state: FollowState, est: JobEstimate, check: Check) -> None:
    """Look for late records in the covered, unsettled window; advance the settled mark."""
    if check.frontier is None or claim.planned_until is None:
        return
    end = min([tl.slot_of(claim.planned_until, tl.first),
               *(tl.slot_of(t, tl.first) for t in state.unlisted_starts)])
    start = tl.sampled_from(check.settled)
    rps = est.records_per_slot or float(multiplicity(spec, meta))
    end = min(end, start + max(1, math.floor(RECHECK_MAX_RECORDS / max(rps, 1e-9))) * tl.stride)
    if end <= start:
        return
    check.late = await late_slots(ctx, claim.job_id, spec, meta, tl,
                                  range(start, end, tl.stride))
    check.settled = max(check.settled, min(end, check.quiet_from(tl, spec)))


async def plan_follow(ctx: StageContext, claim: PlanClaim, spec: JobSpec,
                      meta: SeriesMeta) -> None:
    """Plan a follow job: at due checks ask JSOC and re-check; plan new chunks up to JSOC's
    newest slot minus the lag (a batch per claim); store the mirror state."""
    from service.stages.plan import PLAN_BATCH, chunk_row, next_chunks

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
    rows = late_chunks(spec, meta, tl, est, check.late, ctx.settings.max_chunk_records)
    cursor, done = claim.planned_until, True
    if check.frontier is not None:
        target = tl.index(tl.time(check.frontier - 1) - (spec.lag_seconds or 0.0)) + 1
        chunks, cursor, done = next_chunks(
            spec, meta, est, claim.planned_until, limit=PLAN_BATCH,
            max_records=ctx.settings.max_chunk_records,
            max_bytes=ctx.settings.max_chunk_bytes, until=tl.until(target))
        rows += [chunk_row(c) for c in chunks]
        before = tl.slot_of(claim.planned_until, tl.first)
        if check.settled >= before and cursor is not None:  # planned while already quiet
            check.settled = max(check.settled, min(tl.slot_of(cursor, tl.first),
                                                   check.quiet_from(tl, spec)))
    rows = [{"seq": claim.next_seq + i, **row} for i, row in enumerate(rows)]
    await _store(ctx, claim, spec, tl, rows, cursor, done, check, now if due else None)


async def _store(ctx: StageContext, claim: PlanClaim, spec: JobSpec, tl: Timeline,
                 rows: list[dict[str, Any]], cursor: str | None, done: bool, check: Check,
                 checked_at: datetime | None) -> None:
    """Insert the chunks and store the cursor and the mirror state (fenced by the lease)."""
    if rows:
        await ctx.repo.add_chunks(claim.job_id, rows)
    frontier = None if check.frontier is None else format_tai(tl.time(check.frontier))
    await ctx.repo.advance_plan(
        claim.job_id, planned_until=cursor, next_seq=claim.next_seq + len(rows),
        plan_done=done, lease_token=claim.lease_token, covered_until=cursor,
        next_check_at=ctx.later(check_interval(ctx, spec)) if checked_at else None,
        last_check_at=checked_at, jsoc_until=frontier if checked_at else None,
        settled_until=format_tai(tl.time(check.settled)))
    if rows:
        log.info("follow job %s: planned chunks %d..%d (late records in %d slot(s))",
                 claim.job_id, claim.next_seq, claim.next_seq + len(rows) - 1, len(check.late))
        ctx.wakers.poke("submit")
