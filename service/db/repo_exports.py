"""Export claims: reserve a per-email slot for a chunk, record submission, claim polls.

The per-email limit holds across all workers: a reservation is made only while the email has
fewer than ``max_pending_per_email`` exports in reserving/submitted/polling, counted after
locking the email's ``email_slots`` row (Postgres) or inside BEGIN IMMEDIATE (SQLite).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.models import Chunk, EmailSlot, Export, Job
from service.db.repo_base import (
    ExportClaim,
    PollClaim,
    RepoBase,
    StoredChunk,
    guarded,
    lease_free,
    lease_until,
)
from service.states import EXPORT_PENDING, EXPORT_POLLED, ChunkState, ExportState, JobState

CANDIDATE_JOBS = 100


class ExportsMixin(RepoBase):
    """Chunk → export reservation, submission and polling."""

    async def claim_chunk_to_export(self, worker_id: str, *, lease_seconds: float = 300,
                                    max_pending_per_email: int = 1,
                                    now: datetime | None = None) -> ExportClaim | None:
        """Lease the next chunk to export and reserve its export row (state ``reserving``).

        A reservation abandoned by a dead worker is taken over first. Otherwise jobs are served
        by priority (highest first), then round-robin (least recently served first); a job
        whose notify email already has ``max_pending_per_email`` pending exports is skipped.
        """
        if max_pending_per_email < 1:
            raise ValueError("max_pending_per_email must be at least 1")

        async def tx(s: AsyncSession) -> ExportClaim | None:
            t = self.now(now)
            until = lease_until(t, lease_seconds)
            claim = await self._take_over_reservation(s, worker_id, t, until)
            if claim is not None:
                return claim
            full: set[str] = set()
            for job_id, email in await self._candidate_jobs(s, t):
                if email in full or await self._pending_count(s, email) >= max_pending_per_email:
                    full.add(email)
                    continue
                await self._lock_slot(s, EmailSlot, email, t)
                if await self._pending_count(s, email) >= max_pending_per_email:
                    full.add(email)  # another worker reserved the last slot meanwhile
                    continue
                claim = await self._reserve(s, job_id, worker_id, t, until)
                if claim is not None:
                    return claim
            return None
        return await self._run(tx)

    async def _candidate_jobs(self, s: AsyncSession, t: datetime) -> list[tuple[str, str]]:
        """Running jobs with a chunk ready to export, in service order."""
        rows = await s.execute(
            select(Job.id, Job.notify_email)
            .where(Job.state == JobState.RUNNING, select(Chunk.id).where(
                Chunk.job_id == Job.id, *self._chunk_due(t)).exists())
            .order_by(Job.priority.desc(), Job.last_served_at.asc().nulls_first(),
                      Job.created_at, Job.id)
            .limit(CANDIDATE_JOBS))
        return [(r[0], r[1]) for r in rows]

    @staticmethod
    def _chunk_due(t: datetime) -> list[Any]:
        return [Chunk.state == ChunkState.PLANNED, lease_free(Chunk, t),
                or_(Chunk.next_attempt_at.is_(None), Chunk.next_attempt_at <= t)]

    async def _pending_count(self, s: AsyncSession, email: str) -> int:
        return int(await s.scalar(select(func.count()).where(
            Export.notify_email == email, Export.state.in_(EXPORT_PENDING))) or 0)

    async def _reserve(self, s: AsyncSession, job_id: str, worker_id: str, t: datetime,
                       until: datetime) -> ExportClaim | None:
        row = (await s.execute(
            select(Chunk, Job.notify_email, Job.spec).join(Job, Job.id == Chunk.job_id)
            .where(Chunk.job_id == job_id, *self._chunk_due(t))
            .order_by(Chunk.seq, Chunk.part).limit(1)
            .with_for_update(of=Chunk, skip_locked=True))).one_or_none()
        if row is None:
            return None
        chunk, email, spec = row
        token = await self._lease_chunk(s, chunk, worker_id, t, until, state=ChunkState.EXPORTING)
        if token is None:
            return None
        export = Export(job_id=job_id, chunk_id=chunk.id, notify_email=email,
                        state=ExportState.RESERVING, created_at=t, updated_at=t)
        s.add(export)
        await s.flush()
        await s.execute(guarded(Job).where(Job.id == job_id).values(last_served_at=t))
        return _export_claim(export.id, chunk, email, spec, token, resumed=False)

    async def _take_over_reservation(self, s: AsyncSession, worker_id: str, t: datetime,
                                     until: datetime) -> ExportClaim | None:
        """Lease a chunk whose reservation lost its worker (lease released or expired)."""
        row = (await s.execute(
            select(Chunk, Export.id, Job.notify_email, Job.spec)
            .join(Export, and_(Export.chunk_id == Chunk.id, Export.state == ExportState.RESERVING))
            .join(Job, Job.id == Chunk.job_id)
            .where(Chunk.state == ChunkState.EXPORTING, Job.state == JobState.RUNNING,
                   lease_free(Chunk, t))
            .order_by(Job.priority.desc(), Chunk.id).limit(1)
            .with_for_update(of=Chunk, skip_locked=True))).one_or_none()
        if row is None:
            return None
        chunk, export_id, email, spec = row
        token = await self._lease_chunk(s, chunk, worker_id, t, until, state=ChunkState.EXPORTING)
        return None if token is None else _export_claim(export_id, chunk, email, spec, token,
                                                        resumed=True)

    async def _lease_chunk(self, s: AsyncSession, chunk: Chunk, worker_id: str, t: datetime,
                           until: datetime, *, state: str) -> int | None:
        result = await s.execute(
            guarded(Chunk).where(Chunk.id == chunk.id, Chunk.lease_token == chunk.lease_token,
                                 Chunk.state == chunk.state)
            .values(state=state, lease_owner=worker_id, lease_expires_at=until,
                    lease_token=Chunk.lease_token + 1, updated_at=t)
            .returning(Chunk.lease_token))
        return result.scalar_one_or_none()

    async def record_export_submitted(self, export_id: int, *, request_id: str | None,
                                      status: int, wait: float, lease_token: int,
                                      method: str | None = None, protocol: str | None = None,
                                      sent_at: datetime | None = None,
                                      now: datetime | None = None) -> bool:
        """Record JSOC's answer to exp_request (request id, status, wait); polling starts
        ``wait`` seconds later. ``sent_at``: when the request went out (``submitted_at``,
        where its staging time is counted from; default now). Raises LeaseLost when the chunk's
        lease was taken over."""
        async def tx(s: AsyncSession) -> bool:
            t = self.now(now)
            export = await self._fenced_export(s, export_id, lease_token, (ExportState.RESERVING,))
            await s.execute(guarded(Export).where(Export.id == export_id).values(
                state=ExportState.SUBMITTED, request_id=request_id, jsoc_status=status,
                wait_hint=wait, method=method, protocol=protocol, submitted_at=sent_at or t,
                updated_at=t,
                next_poll_at=t + timedelta(seconds=max(wait, 0))))
            await s.execute(guarded(Chunk).where(Chunk.id == export.chunk_id)
                            .values(lease_owner=None, lease_expires_at=None, updated_at=t))
            return True
        return await self._run(tx)

    async def claim_exports_to_poll(self, worker_id: str, *, limit: int = 10,
                                    lease_seconds: float = 120,
                                    now: datetime | None = None) -> list[PollClaim]:
        """Lease submitted/polling exports whose next poll is due, earliest first (also for
        paused jobs: a pending JSOC export holds the email's slot until it finishes)."""
        async def tx(s: AsyncSession) -> list[PollClaim]:
            t = self.now(now)
            exports = (await s.execute(
                select(Export).where(Export.state.in_(EXPORT_POLLED),
                                     Export.next_poll_at <= t, lease_free(Export, t))
                .order_by(Export.next_poll_at, Export.id).limit(limit)
                .with_for_update(skip_locked=True))).scalars().all()
            claims = []
            for e in exports:
                token = (await s.execute(
                    guarded(Export).where(Export.id == e.id, Export.lease_token == e.lease_token)
                    .values(lease_owner=worker_id, lease_expires_at=lease_until(t, lease_seconds),
                            lease_token=Export.lease_token + 1)
                    .returning(Export.lease_token))).scalar_one_or_none()
                if token is not None:
                    claims.append(PollClaim(e.id, e.request_id, e.chunk_id, e.job_id,
                                            e.notify_email, e.method, e.protocol, e.polls, token))
            return claims
        return await self._run(tx)

    async def next_poll_due(self) -> datetime | None:
        """When the earliest scheduled status poll is due (None when no export waits)."""
        async def tx(s: AsyncSession) -> datetime | None:
            return await s.scalar(select(func.min(Export.next_poll_at)).where(
                Export.state.in_(EXPORT_POLLED)))
        return await self._run(tx, read_only=True)

    async def record_poll(self, export_id: int, *, status: int, wait: float, lease_token: int,
                          error: str | None = None, now: datetime | None = None) -> bool:
        """Record a pending exp_status answer; the next poll is due ``wait`` seconds later.
        Raises LeaseLost when the export's lease was taken over."""
        async def tx(s: AsyncSession) -> bool:
            t = self.now(now)
            await self._fenced_export(s, export_id, lease_token, EXPORT_POLLED)
            await s.execute(guarded(Export).where(Export.id == export_id).values(
                state=ExportState.POLLING, jsoc_status=status, wait_hint=wait, error=error,
                polls=Export.polls + 1, next_poll_at=t + timedelta(seconds=max(wait, 0)),
                lease_owner=None, lease_expires_at=None, updated_at=t))
            return True
        return await self._run(tx)


def _export_claim(export_id: int, chunk: Chunk, email: str, spec: dict[str, Any], token: int,
                  *, resumed: bool) -> ExportClaim:
    return ExportClaim(export_id, chunk.id, chunk.job_id, StoredChunk.of(chunk), email, spec,
                       token, resumed, chunk.est_records)

