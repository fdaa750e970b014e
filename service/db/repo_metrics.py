"""The figures ``/metrics`` reads from the database at scrape time, in one read transaction.

Cheap by construction: file counts and bytes come from the per-chunk counters of active jobs
(``counters.py``), plus the files downloading now; exports, queues and politeness use indexed
filters; nothing counts all the file rows of a job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.models import Chunk, Export, File, HostSlot, Job, Worker
from service.db.repo_base import RepoBase
from service.db.tar_rows import NOT_TAR_ROW
from service.states import EXPORT_PENDING, JOB_ACTIVE, JOB_UNPAUSED, ChunkState, FileState


@dataclass
class JobFigures:
    """One active job: files by state and bytes, from the chunk counters."""

    state: str
    follow: bool
    files: dict[str, int] = field(default_factory=dict)
    bytes_done: int = 0
    bytes_expected: int = 0


@dataclass
class MetricsSnapshot:
    """Everything the database contributes to one scrape."""

    jobs_by_state: dict[str, int] = field(default_factory=dict)
    active_jobs: dict[str, JobFigures] = field(default_factory=dict)
    exports_by_state: dict[str, int] = field(default_factory=dict)
    pending_exports: dict[str, int] = field(default_factory=dict)  # by notify email
    active_connections: dict[str, int] = field(default_factory=dict)  # by download host
    queue: dict[str, int] = field(default_factory=dict)  # plan / export / download
    heartbeats: dict[str, datetime] = field(default_factory=dict)  # running workers


class MetricsMixin(RepoBase):
    """``metrics_snapshot``: the job-level figures of ``/metrics``."""

    async def metrics_snapshot(self, *, now: datetime | None = None) -> MetricsSnapshot:
        t = self.now(now)

        async def tx(s: AsyncSession) -> MetricsSnapshot:
            snap = MetricsSnapshot()
            snap.jobs_by_state = dict((await s.execute(
                select(Job.state, func.count()).group_by(Job.state))).all())
            await _job_figures(s, snap)
            snap.exports_by_state = dict((await s.execute(
                select(Export.state, func.count()).group_by(Export.state))).all())
            snap.pending_exports = dict((await s.execute(
                select(Export.notify_email, func.count()).where(Export.state.in_(EXPORT_PENDING))
                .group_by(Export.notify_email))).all())
            for host in (await s.execute(select(HostSlot.host))).scalars():
                snap.active_connections[host] = await self._active_connections(  # type: ignore[attr-defined]
                    s, host, None, t)
            snap.queue = await _queue(s, snap)
            snap.heartbeats = dict((await s.execute(
                select(Worker.id, Worker.heartbeat_at).where(Worker.stopped_at.is_(None))))
                .all())
            return snap

        return await self._run(tx, read_only=True)


async def _job_figures(s: AsyncSession, snap: MetricsSnapshot) -> None:
    """Files by state and bytes of each active job (chunk counters + files downloading)."""
    jobs = (await s.execute(select(Job.id, Job.state, Job.follow)
                            .where(Job.state.in_(JOB_ACTIVE)))).all()
    snap.active_jobs = {j.id: JobFigures(j.state, bool(j.follow)) for j in jobs}
    if not jobs:
        return
    sums = [func.coalesce(func.sum(c), 0) for c in (
        Chunk.files_open, Chunk.files_done, Chunk.files_failed, Chunk.files_skipped,
        Chunk.bytes_done, Chunk.bytes_expected)]
    rows = (await s.execute(select(Chunk.job_id, *sums)
                            .where(Chunk.job_id.in_(snap.active_jobs))
                            .group_by(Chunk.job_id))).all()
    moving = dict((await s.execute(
        select(File.job_id, func.count()).where(
            File.job_id.in_(snap.active_jobs), File.state == FileState.DOWNLOADING, NOT_TAR_ROW)
        .group_by(File.job_id))).all())
    for job_id, *sums_of_job in rows:  # a star target: mypy cannot count the *sums columns
        opened, done, failed, skipped, bytes_done, expected = sums_of_job
        figures = snap.active_jobs[job_id]
        downloading = int(moving.get(job_id, 0))
        figures.files = {FileState.PENDING: max(0, int(opened) - downloading),
                         FileState.DOWNLOADING: downloading, FileState.DONE: int(done),
                         FileState.FAILED: int(failed), FileState.SKIPPED: int(skipped)}
        figures.bytes_done, figures.bytes_expected = int(bytes_done), int(expected)


async def _queue(s: AsyncSession, snap: MetricsSnapshot) -> dict[str, int]:
    """Work waiting: jobs still to plan, chunks waiting for an export, files to download."""
    to_plan = await s.scalar(select(func.count()).where(
        Job.state.in_(JOB_UNPAUSED), Job.plan_done.is_(False)))
    to_export = await s.scalar(select(func.count()).select_from(Chunk).where(
        Chunk.state == ChunkState.PLANNED, Chunk.job_id.in_(snap.active_jobs)))
    to_fetch = sum(j.files.get(FileState.PENDING, 0) for j in snap.active_jobs.values())
    return {"plan": int(to_plan or 0), "export": int(to_export or 0), "download": to_fetch}
