"""Planning: lease a job to plan, insert its chunks (insert-or-ignore), advance its cursor."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.models import JOB_ACTIVE, Chunk, Job
from service.db.repo_base import (
    InvalidTransition,
    LeaseLost,
    NotFound,
    PlanClaim,
    RepoBase,
    aware,
    guarded,
    lease_until,
)

CHUNK_FIELDS = {"seq", "recordset", "start_time", "end_time", "est_records", "est_bytes"}


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
        rows.append({"job_id": job_id, "part": "", "state": "planned", **chunk})
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
                                                  Chunk.state == "planned").scalar_subquery())
            needs_plan = or_(and_(Job.plan_done.is_(False), waiting < max_ahead),
                             and_(Job.follow.is_(True), Job.next_check_at <= t))
            job = (await s.execute(
                select(Job).where(Job.state.in_(("queued", "running")), _plan_lease_free(t),
                                  needs_plan)
                .order_by(Job.priority.desc(), Job.created_at, Job.id).limit(1)
                .with_for_update(skip_locked=True))).scalar_one_or_none()
            if job is None:
                return None
            token = (await s.execute(
                guarded(Job).where(Job.id == job.id, Job.plan_lease_token == job.plan_lease_token)
                .values(state="running", plan_lease_owner=worker_id, updated_at=t,
                        plan_lease_expires_at=lease_until(t, lease_seconds),
                        plan_lease_token=Job.plan_lease_token + 1)
                .returning(Job.plan_lease_token))).scalar_one()
            return PlanClaim(job.id, job.spec, job.planned_until, job.next_seq, job.follow,
                             job.covered_until, token)
        return await self._run(tx)

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
                added += max(result.rowcount, 0)
            return added
        return await self._run(tx) if rows else 0

    async def advance_plan(self, job_id: str, *, planned_until: str | None, next_seq: int,
                           plan_done: bool, lease_token: int | None = None,
                           covered_until: str | None = None,
                           next_check_at: datetime | None = None,
                           release: bool = True) -> bool:
        """Move the planning cursor (and release the plan lease unless ``release=False``).

        With ``lease_token`` the update is fenced: False when another worker took the lease.
        """
        if next_check_at is not None:
            aware(next_check_at, "next_check_at")
        async def tx(s: AsyncSession) -> bool:
            cond = [Job.id == job_id]
            if lease_token is not None:
                cond.append(Job.plan_lease_token == lease_token)
            values: dict[str, Any] = {"planned_until": planned_until, "next_seq": next_seq,
                                      "plan_done": plan_done, "updated_at": self.now()}
            if covered_until is not None:
                values["covered_until"] = covered_until
            if next_check_at is not None:
                values["next_check_at"] = next_check_at
            if release:
                values.update(plan_lease_owner=None, plan_lease_expires_at=None)
            result = await s.execute(guarded(Job).where(*cond).values(values))
            if result.rowcount == 0:
                if await s.get(Job, job_id) is None:
                    raise NotFound(f"no job with id {job_id!r}")
                raise LeaseLost(f"plan lease of job {job_id} was taken over")
            if plan_done:
                await self._refresh_job(s, job_id)
            return True
        try:
            return await self._run(tx)
        except LeaseLost:
            return False
