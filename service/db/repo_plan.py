"""Planning: lease a job to plan, insert its chunks (insert-or-ignore), advance its cursor;
the follow-mode (mirror) state of a job and what it already holds in a time window."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.errors import InvalidTransition, LeaseLost, NotFound
from service.db.models import Chunk, File, Job
from service.db.repo_base import (
    UNFENCED,
    LeaseToken,
    PlanClaim,
    RepoBase,
    aware,
    guarded,
    lease_until,
    rowcount,
)
from service.states import (
    CHUNK_OPEN,
    CHUNK_UNLISTED,
    JOB_ACTIVE,
    JOB_UNPAUSED,
    ChunkState,
    JobState,
)

CHUNK_FIELDS = {"seq", "recordset", "start_time", "end_time", "est_records", "est_bytes"}
UNLISTED = CHUNK_UNLISTED  # open chunks whose files are not listed yet


@dataclass(frozen=True)
class FollowState:
    """A follow job's mirror state. Times are JSOC TAI strings (``format_tai``).

    ``open_starts``: start times of its open chunks (planned … downloading);
    ``unlisted_starts``: those of chunks still planned or exporting (no file rows yet).
    """

    state: str
    planned_until: str | None
    covered_until: str | None
    jsoc_until: str | None
    settled_until: str | None
    next_check_at: datetime | None
    last_check_at: datetime | None
    open_starts: list[str] = field(default_factory=list)
    unlisted_starts: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PlanStatus:
    """What planning looks at before it plans more of a job: its state, notify address and
    how many of its chunks are exporting, ready or downloading."""

    state: str
    notify_email: str
    open_chunks: int


@dataclass(frozen=True)
class WindowContents:
    """What a job holds in a time window: record names of its file rows (lower-cased) and the
    (start, end) ranges of its failed chunks there."""

    records: set[str]
    failed: list[tuple[str, str]]


def _plan_lease_free(now: datetime) -> Any:
    return or_(Job.plan_lease_owner.is_(None), Job.plan_lease_expires_at <= now)


def chunk_rows(job_id: str, chunks: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Validate planner chunk dicts and turn them into rows."""
    rows = []
    for i, chunk in enumerate(chunks):
        unknown = set(chunk) - CHUNK_FIELDS
        if unknown:
            raise ValueError(f"chunk {i}: unknown field(s) {sorted(unknown)}; "
                             f"accepted: {sorted(CHUNK_FIELDS)}")
        if not isinstance(chunk.get("seq"), int) or chunk["seq"] < 0:
            raise ValueError(f"chunk {i}: seq must be a non-negative integer")
        if not isinstance(chunk.get("recordset"), str) or not chunk["recordset"]:
            raise ValueError(f"chunk {i}: recordset must be a non-empty string")
        rows.append({"job_id": job_id, "part": "", "state": ChunkState.PLANNED, **chunk})
    return rows


class PlanMixin(RepoBase):
    """Lazy, idempotent planning of jobs into chunks."""

    async def claim_job_to_plan(self, worker_id: str, *, lease_seconds: float = 120,
                                max_ahead: int = 2,
                                now: datetime | None = None) -> PlanClaim | None:
        """Lease a job that needs planning: unplanned and fewer than ``max_ahead`` chunks
        waiting, or a follow-mode job whose next check is due. A queued job starts running."""
        async def tx(s: AsyncSession) -> PlanClaim | None:
            t = self.now(now)
            waiting = (select(func.count()).where(Chunk.job_id == Job.id,
                                                  Chunk.state == ChunkState.PLANNED)
                       .scalar_subquery())
            needs_plan = or_(and_(Job.plan_done.is_(False), waiting < max_ahead),
                             and_(Job.follow.is_(True), Job.next_check_at <= t))
            job = (await s.execute(
                select(Job).where(Job.state.in_(JOB_UNPAUSED), _plan_lease_free(t),
                                  needs_plan)
                .order_by(Job.priority.desc(), Job.created_at, Job.id).limit(1)
                .with_for_update(skip_locked=True))).scalar_one_or_none()
            if job is None:
                return None
            token = (await s.execute(
                guarded(Job).where(Job.id == job.id, Job.plan_lease_token == job.plan_lease_token)
                .values(state=JobState.RUNNING, plan_lease_owner=worker_id, updated_at=t,
                        plan_lease_expires_at=lease_until(t, lease_seconds),
                        plan_lease_token=Job.plan_lease_token + 1)
                .returning(Job.plan_lease_token))).scalar_one()
            return PlanClaim(job.id, job.spec, job.planned_until, job.next_seq, job.follow,
                             job.covered_until, token)
        return await self._run(tx)

    async def plan_status(self, job_id: str) -> PlanStatus:
        """The job's state and its chunks past planning but not finished (NotFound if gone)."""
        async def tx(s: AsyncSession) -> PlanStatus:
            job = (await s.execute(select(Job.state, Job.notify_email)
                                   .where(Job.id == job_id))).one_or_none()
            if job is None:
                raise NotFound(f"no job with id {job_id!r}")
            opened = await s.scalar(select(func.count()).where(
                Chunk.job_id == job_id,
                Chunk.state.in_((ChunkState.EXPORTING, ChunkState.READY, ChunkState.DOWNLOADING))))
            return PlanStatus(job.state, job.notify_email, int(opened or 0))
        return await self._run(tx, read_only=True)

    async def add_chunks(self, job_id: str, chunks: Sequence[Mapping[str, Any]]) -> int:
        """Insert planned chunks, ignoring seqs the job already has; returns how many were new.

        Each chunk: ``seq`` and ``recordset`` (required), ``start_time``, ``end_time``,
        ``est_records``, ``est_bytes``.
        """
        rows = chunk_rows(job_id, chunks)

        async def tx(s: AsyncSession) -> int:
            state = await s.scalar(select(Job.state).where(Job.id == job_id))
            if state is None:
                raise NotFound(f"no job with id {job_id!r}")
            if state not in JOB_ACTIVE:
                raise InvalidTransition(f"cannot add chunks to job {job_id}: it is {state}")
            added = 0
            now = self.now()
            for start in range(0, len(rows), 500):
                batch = [{**r, "created_at": now, "updated_at": now}
                         for r in rows[start:start + 500]]
                result = await s.execute(self.insert(Chunk).values(batch).on_conflict_do_nothing(
                    index_elements=["job_id", "seq", "part"]))
                added += max(rowcount(result), 0)
            return added
        return await self._run(tx) if rows else 0

    async def advance_plan(self, job_id: str, *, planned_until: str | None, next_seq: int,
                           plan_done: bool, lease_token: LeaseToken,
                           covered_until: str | None = None,
                           next_check_at: datetime | None = None,
                           jsoc_until: str | None = None, settled_until: str | None = None,
                           last_check_at: datetime | None = None,
                           release: bool = True) -> bool:
        """Move the planning cursor (and release the plan lease unless ``release=False``).

        Follow fields given (not None) are stored too. The update is fenced by ``lease_token``
        (the plan claim's): LeaseLost when another worker took the lease.
        """
        for name, value in (("next_check_at", next_check_at), ("last_check_at", last_check_at)):
            if value is not None:
                aware(value, name)
        follow_values = {k: v for k, v in (
            ("covered_until", covered_until), ("next_check_at", next_check_at),
            ("jsoc_until", jsoc_until), ("settled_until", settled_until),
            ("last_check_at", last_check_at)) if v is not None}

        async def tx(s: AsyncSession) -> bool:
            cond = [Job.id == job_id]
            if lease_token is not UNFENCED:
                cond.append(Job.plan_lease_token == lease_token)
            values: dict[str, Any] = {"planned_until": planned_until, "next_seq": next_seq,
                                      "plan_done": plan_done, "updated_at": self.now()}
            values.update(follow_values)
            if release:
                values.update(plan_lease_owner=None, plan_lease_expires_at=None)
            result = await s.execute(guarded(Job).where(*cond).values(values))
            if rowcount(result) == 0:
                if await s.get(Job, job_id) is None:
                    raise NotFound(f"no job with id {job_id!r}")
                raise LeaseLost(f"plan lease of job {job_id} was taken over")
            if plan_done:
                await self._refresh_job(s, job_id)
            return True
        return await self._run(tx)

    async def follow_state(self, job_id: str) -> FollowState:
        """The job's mirror state and the start times of its open chunks."""
        async def tx(s: AsyncSession) -> FollowState:
            job = await s.get(Job, job_id)
            if job is None:
                raise NotFound(f"no job with id {job_id!r}")
            rows = (await s.execute(
                select(Chunk.state, Chunk.start_time).where(
                    Chunk.job_id == job_id, Chunk.state.in_(CHUNK_OPEN),
                    Chunk.start_time.is_not(None)))).all()
            return FollowState(
                state=job.state, planned_until=job.planned_until,
                covered_until=job.covered_until, jsoc_until=job.jsoc_until,
                settled_until=job.settled_until, next_check_at=job.next_check_at,
                last_check_at=job.last_check_at, open_starts=[r.start_time for r in rows],
                unlisted_starts=[r.start_time for r in rows if r.state in UNLISTED])
        return await self._run(tx, read_only=True)

    async def window_contents(self, job_id: str, start: str, end: str) -> WindowContents:
        """Record names of the job's files in chunks overlapping ``[start, end)``, and its failed
        chunks there. ``start``/``end`` are ``format_tai`` strings, which sort in time order
        (to the second: widen the window by a second when slots have fractions)."""
        async def tx(s: AsyncSession) -> WindowContents:
            rows = (await s.execute(
                select(Chunk.id, Chunk.state, Chunk.start_time, Chunk.end_time).where(
                    Chunk.job_id == job_id, Chunk.start_time < end, Chunk.end_time > start))
                    ).all()
            ids = [r.id for r in rows]
            records: set[str] = set()
            for first in range(0, len(ids), 500):
                names = await s.execute(select(File.record).distinct()
                                        .where(File.chunk_id.in_(ids[first:first + 500])))
                records.update(name.strip().lower() for name in names.scalars())
            failed = [(r.start_time, r.end_time) for r in rows if r.state == ChunkState.FAILED]
            return WindowContents(records=records, failed=failed)
        return await self._run(tx, read_only=True)
