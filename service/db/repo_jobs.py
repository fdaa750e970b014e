"""Job operations: create (idempotent), read, summarise, and the user's state changes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.errors import InvalidTransition, NotFound
from service.db.models import Chunk, Export, File, Job, JobEvent, new_job_id
from service.db.repo_base import JobSummary, RepoBase, check_states, guarded, rowcount
from service.db.tar_rows import NOT_TAR_ROW, revive_tars
from service.states import (
    CHUNK_OPEN,
    CHUNK_STATES,
    CHUNK_UNLISTED,
    EXPORT_PENDING,
    FILE_OPEN,
    FILE_STATES,
    JOB_ACTIVE,
    JOB_RETRYABLE,
    JOB_STATES,
    JOB_UNPAUSED,
    ChunkState,
    ExportState,
    FileState,
    JobState,
)

LEASE_CLEARED = {"lease_owner": None, "lease_expires_at": None}


class JobsMixin(RepoBase):
    """Creating, listing and steering jobs."""

    async def create_job(self, spec: Mapping[str, Any], *, notify_email: str, priority: int = 0,
                         idempotency_key: str | None = None,
                         follow: bool = False) -> tuple[Job, bool]:
        """Create a queued job; with a known idempotency key return the existing job instead.

        Returns ``(job, created)``.
        """
        if not isinstance(spec, Mapping):
            raise ValueError(f"job spec must be a JSON object, got {type(spec).__name__}")
        if not isinstance(notify_email, str) or "@" not in notify_email:
            raise ValueError(f"notify_email must be an email address, got {notify_email!r}")
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise ValueError(f"priority must be an integer, got {priority!r}")
        if idempotency_key is not None and not (0 < len(idempotency_key) <= 255):
            raise ValueError("idempotency_key must be 1 to 255 characters")

        async def tx(s: AsyncSession) -> tuple[Job, bool]:
            now = self.now()
            job_id = new_job_id()
            values = {"id": job_id, "spec": dict(spec), "state": JobState.QUEUED,
                      "priority": priority, "notify_email": notify_email,
                      "idempotency_key": idempotency_key,
                      "follow": follow, "created_at": now, "updated_at": now}
            stmt = self.insert(Job).values(values)
            if idempotency_key is not None:
                stmt = stmt.on_conflict_do_nothing(index_elements=["idempotency_key"])
            await s.execute(stmt)
            where = (Job.idempotency_key == idempotency_key if idempotency_key is not None
                     else Job.id == job_id)
            job = (await s.execute(select(Job).where(where))).scalar_one()
            return job, job.id == job_id

        job, created = await self._run(tx)
        if created:
            self._changed("job_created")
        return job, created

    async def get_job(self, job_id: str) -> Job | None:
        """The job, or None."""
        async def tx(s: AsyncSession) -> Job | None:
            return await s.get(Job, job_id)
        return await self._run(tx, read_only=True)

    async def get_export(self, export_id: int) -> Export | None:
        """One export row by id, or None."""
        async def tx(s: AsyncSession) -> Export | None:
            return await s.get(Export, export_id)
        return await self._run(tx, read_only=True)

    async def list_jobs(self, state: str | Sequence[str] | None = None, *, limit: int = 50,
                        offset: int = 0) -> list[Job]:
        """Jobs, newest first, optionally only those in the given state(s)."""
        states = check_states(state, JOB_STATES, "job")
        query = select(Job).order_by(Job.created_at.desc(), Job.id.desc())
        if states:
            query = query.where(Job.state.in_(states))
        query = query.limit(_positive(limit, "limit")).offset(_not_negative(offset, "offset"))

        async def tx(s: AsyncSession) -> list[Job]:
            return list((await s.execute(query)).scalars())
        return await self._run(tx, read_only=True)

    async def job_summary(self, job_id: str, *, events: int = 10) -> JobSummary:
        """Counts of chunks, exports and files by state, byte totals and recent events."""
        async def tx(s: AsyncSession) -> JobSummary:
            job = await _require_job(s, job_id)
            summary = JobSummary(job=job)
            rows = await s.execute(select(Export.state, func.count())
                                   .where(Export.job_id == job_id).group_by(Export.state))
            summary.exports.update(rows.all())
            await _chunk_and_file_totals(s, job_id, summary)
            summary.recent_events = list((await s.execute(
                select(JobEvent).where(JobEvent.job_id == job_id)
                .order_by(JobEvent.id.desc()).limit(events))).scalars())
            return summary
        return await self._run(tx, read_only=True)

    async def list_files(self, job_id: str, state: str | Sequence[str] | None = None, *,
                         limit: int = 100, offset: int = 0, after_id: int = 0,
                         tar_rows: bool = True) -> list[File]:
        """Files of a job in id order (ids above ``after_id``), optionally by state; without
        ``tar_rows`` only the job's files (a url-tar export's tar row is not one)."""
        return await self._list_rows(File, job_id, check_states(state, FILE_STATES, "file"),
                                     limit, offset, after_id, () if tar_rows else (NOT_TAR_ROW,))

    async def list_chunks(self, job_id: str, state: str | Sequence[str] | None = None, *,
                          limit: int = 1000, offset: int = 0) -> list[Chunk]:
        """Chunks of a job in id order, optionally filtered by state."""
        return await self._list_rows(Chunk, job_id, check_states(state, CHUNK_STATES, "chunk"),
                                     limit, offset)

    async def list_exports(self, job_id: str, *, limit: int = 1000,
                           offset: int = 0) -> list[Export]:
        """Exports of a job in id order."""
        return await self._list_rows(Export, job_id, [], limit, offset)

    async def _list_rows(self, model: Any, job_id: str, states: list[str], limit: int,
                         offset: int, after_id: int = 0, where: Sequence[Any] = ()) -> list[Any]:
        query = select(model).where(model.job_id == job_id, model.id > after_id, *where
                                    ).order_by(model.id)
        if states:
            query = query.where(model.state.in_(states))
        query = query.limit(_positive(limit, "limit")).offset(_not_negative(offset, "offset"))

        async def tx(s: AsyncSession) -> list[Any]:
            await _require_job(s, job_id)
            return list((await s.execute(query)).scalars())
        return await self._run(tx, read_only=True)

    async def add_event(self, job_id: str, kind: str, message: str, *,
                        level: str = "error") -> None:
        """Record a job event (the newest few per job are kept)."""
        async def tx(s: AsyncSession) -> None:
            await _require_job(s, job_id)
            await self._add_event(s, job_id, kind, message, level)
        await self._run(tx)

    async def cancel_job(self, job_id: str) -> Job:
        """Cancel a job: open chunks cancelled, pending exports closed, files skipped."""
        async def tx(s: AsyncSession) -> Job:
            job = await _require_job(s, job_id)
            if job.state == JobState.CANCELLED:
                return job
            await self._transition(s, job_id, JOB_ACTIVE, JobState.CANCELLED,
                                   "cancel", finished=True)
            now = self.now()
            await s.execute(guarded(Chunk).where(Chunk.job_id == job_id,
                                                 Chunk.state.in_(CHUNK_OPEN))
                            .values(state=ChunkState.CANCELLED, updated_at=now, **LEASE_CLEARED))
            await s.execute(guarded(Export).where(Export.job_id == job_id,
                                                  Export.state.in_(EXPORT_PENDING))
                            .values(state=ExportState.ERROR, error="job cancelled", updated_at=now,
                                    **LEASE_CLEARED))
            await s.execute(guarded(File).where(File.job_id == job_id,
                                                File.state.in_(FILE_OPEN))
                            .values(state=FileState.SKIPPED, updated_at=now, lane=None,
                                    **LEASE_CLEARED))
            await s.execute(guarded(Chunk).where(Chunk.job_id == job_id, Chunk.files_open > 0)
                            .values(files_skipped=Chunk.files_skipped + Chunk.files_open,
                                    files_open=0))
            return await _reload_job(s, job_id)
        return await self._run(tx)

    async def start_job(self, job_id: str) -> Job:
        """Let a queued job's chunks be claimed (planning also does this)."""
        async def tx(s: AsyncSession) -> Job:
            if (await _require_job(s, job_id)).state != JobState.RUNNING:
                await self._transition(s, job_id, (JobState.QUEUED,), JobState.RUNNING, "start")
            return await _reload_job(s, job_id)
        return await self._run(tx)

    async def pause_job(self, job_id: str) -> Job:
        """Stop claiming new work for a job (in-flight work may finish)."""
        async def tx(s: AsyncSession) -> Job:
            if (await _require_job(s, job_id)).state != JobState.PAUSED:
                await self._transition(s, job_id, JOB_UNPAUSED, JobState.PAUSED, "pause")
            return await _reload_job(s, job_id)
        return await self._run(tx)

    async def resume_job(self, job_id: str) -> Job:
        """Resume a paused job."""
        async def tx(s: AsyncSession) -> Job:
            if (await _require_job(s, job_id)).state != JobState.RUNNING:
                await self._transition(s, job_id, (JobState.PAUSED,), JobState.RUNNING, "resume")
                await self._refresh_job(s, job_id)
            return await _reload_job(s, job_id)
        job = await self._run(tx)
        self._changed("jobs")
        return job

    async def fail_job(self, job_id: str, error: str) -> Job:
        """Fail a whole job (e.g. its spec cannot be planned)."""
        async def tx(s: AsyncSession) -> Job:
            await self._transition(s, job_id, JOB_ACTIVE, JobState.FAILED, "fail",
                                   finished=True, error=error)
            await self._add_event(s, job_id, "job_failed", error)
            return await _reload_job(s, job_id)
        return await self._run(tx)

    async def retry_job(self, job_id: str) -> Job:
        """Put failed chunks and files back to work with attempts reset, and files waiting
        for a retry due at once; the job runs again."""
        async def tx(s: AsyncSession) -> Job:
            job = await _require_job(s, job_id)
            allowed = (*JOB_RETRYABLE, JobState.RUNNING, JobState.PAUSED)
            if job.state not in allowed:
                raise InvalidTransition(f"cannot retry job {job_id}: it is {job.state} "
                                        f"(allowed when {', '.join(allowed)})")
            await self._reset_failures(s, job_id)
            if job.state in JOB_RETRYABLE:
                await self._transition(s, job_id, (job.state,), JobState.RUNNING, "retry",
                                       error=None, finished_at=None, plan_lease_owner=None,
                                       plan_lease_expires_at=None)
            await self._refresh_job(s, job_id)
            return await _reload_job(s, job_id)
        job = await self._run(tx)
        self._changed("jobs")
        return job

    async def _reset_failures(self, s: AsyncSession, job_id: str) -> None:
        now = self.now()
        has_ready_export = (select(Export.id).where(Export.chunk_id == Chunk.id,
                                                    Export.state == ExportState.READY).exists())
        reset = {"attempts": 0, "next_attempt_at": None, "error": None, "updated_at": now}
        await s.execute(guarded(Chunk).where(Chunk.job_id == job_id,
                                             Chunk.state == ChunkState.FAILED, has_ready_export)
                        .values(state=ChunkState.READY, **reset))
        await s.execute(guarded(Chunk).where(Chunk.job_id == job_id,
                                             Chunk.state == ChunkState.FAILED)
                        .values(state=ChunkState.PLANNED, **reset, **LEASE_CLEARED))
        await s.execute(guarded(File).where(File.job_id == job_id, File.state == FileState.FAILED)
                        .values(state=FileState.PENDING, **reset))
        await s.execute(guarded(File).where(File.job_id == job_id, File.state == FileState.PENDING,
                                            File.next_attempt_at.is_not(None))
                        .values(**reset))  # waiting retries: due at once
        await revive_tars(s, now, File.job_id == job_id)  # members back: their tars too
        await s.execute(guarded(Chunk).where(Chunk.job_id == job_id, Chunk.files_failed > 0)
                        .values(files_open=Chunk.files_open + Chunk.files_failed,
                                files_failed=0))

    async def delete_job(self, job_id: str) -> None:
        """Delete a job and everything recorded for it (not while it is running)."""
        async def tx(s: AsyncSession) -> None:
            job = await _require_job(s, job_id)
            if job.state == JobState.RUNNING:
                raise InvalidTransition(f"cannot delete job {job_id}: it is running "
                                        "(cancel or pause it first)")
            await s.execute(delete(Job).where(Job.id == job_id)
                            .execution_options(synchronize_session=False))
        await self._run(tx)

    async def _transition(self, s: AsyncSession, job_id: str, allowed: Sequence[str], to: str,
                          action: str, *, finished: bool = False, **values: Any) -> None:
        """Guarded job state change; InvalidTransition names the current and allowed states."""
        now = self.now()
        if finished:
            values["finished_at"] = now
        result = await s.execute(guarded(Job).where(Job.id == job_id, Job.state.in_(allowed))
                                 .values(state=to, updated_at=now, **values))
        if rowcount(result) == 0:
            job = await _require_job(s, job_id)
            raise InvalidTransition(f"cannot {action} job {job_id}: it is {job.state} "
                                    f"(allowed when {', '.join(allowed)})")


async def _chunk_and_file_totals(s: AsyncSession, job_id: str, summary: JobSummary) -> None:
    """Chunk counts by state, and file counts and bytes from the chunk counters plus the few
    files in flight: the cost grows with the job's chunks and files downloading now, never
    with all its files."""
    sums = [func.coalesce(func.sum(column), 0) for column in (
        Chunk.files_open, Chunk.files_done, Chunk.files_failed, Chunk.files_skipped,
        Chunk.bytes_done, Chunk.bytes_expected, Chunk.est_bytes)]
    rows = (await s.execute(select(Chunk.state, func.count(), *sums)
                            .where(Chunk.job_id == job_id).group_by(Chunk.state))).all()
    totals = [0] * 6
    for state, n, *values in rows:
        summary.chunks[state] = n
        totals = [t + int(v) for t, v in zip(totals, values[:6], strict=True)]
        if state not in (ChunkState.SPLIT, ChunkState.CANCELLED):
            summary.est_bytes += int(values[6])
        if state in CHUNK_UNLISTED:
            summary.est_unlisted += int(values[6])
    opened, done, failed, skipped, bytes_done, expected = totals
    moving, partial = (await s.execute(
        select(func.count(), func.coalesce(func.sum(File.bytes_done), 0))
        .where(File.job_id == job_id, File.state == FileState.DOWNLOADING, NOT_TAR_ROW))).one()
    counts = {FileState.PENDING: opened - int(moving), FileState.DOWNLOADING: int(moving),
              FileState.DONE: done, FileState.FAILED: failed, FileState.SKIPPED: skipped}
    summary.files.update({k: v for k, v in counts.items() if v})
    summary.bytes_done, summary.bytes_expected = bytes_done + int(partial), expected


async def _require_job(s: AsyncSession, job_id: str) -> Job:
    job = await s.get(Job, job_id)
    if job is None:
        raise NotFound(f"no job with id {job_id!r}")
    return job


async def _reload_job(s: AsyncSession, job_id: str) -> Job:
    return (await s.execute(select(Job).where(Job.id == job_id)
                            .execution_options(populate_existing=True))).scalar_one()


def _positive(value: int, name: str) -> int:
    if not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _not_negative(value: int, name: str) -> int:
    if not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return value
