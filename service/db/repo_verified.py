"""Files after they finished: the rows a manifest is written from, and finished files that a
later check found bad, put back as failed so that ``retry`` fetches them again."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.counters import recount_chunks
from service.db.errors import NotFound
from service.db.models import Chunk, File, Job, StoredFile
from service.db.repo_base import RepoBase, guarded
from service.db.tar_rows import NOT_TAR_ROW
from service.states import ChunkState, FileState, JobState


@dataclass(frozen=True)
class DoneFile:
    """A finished file as a manifest lists it."""

    id: int
    job_id: str
    record: str
    segment: str | None
    dest_path: str  # relative to the download root
    size: int
    sha256: str | None


class VerifiedMixin(RepoBase):
    """Finished files: manifest rows, and files found bad after they finished."""

    async def done_files(self, file_ids: Iterable[int]) -> list[DoneFile]:
        """The rows among ``file_ids`` that are done (tar rows left out), in id order."""
        ids = sorted(set(file_ids))

        async def tx(s: AsyncSession) -> list[DoneFile]:
            rows = await s.execute(
                select(File.id, File.job_id, File.record, File.segment, File.dest_path,
                       File.bytes_done, File.sha256)
                .where(File.id.in_(ids), File.state == FileState.DONE, NOT_TAR_ROW)
                .order_by(File.id))
            return [DoneFile(*row) for row in rows.all()]
        return await self._run(tx, read_only=True) if ids else []

    async def job_done_count(self, job_id: str) -> int:
        """How many of the job's files are done (from the chunk counters)."""
        async def tx(s: AsyncSession) -> int:
            done = await s.scalar(select(func.coalesce(func.sum(Chunk.files_done), 0))
                                  .where(Chunk.job_id == job_id))
            return int(done or 0)
        return await self._run(tx, read_only=True)

    async def job_done_files(self, job_id: str, *, after_id: int = 0,
                             limit: int = 1000) -> list[DoneFile]:
        """A page of a job's done files with ids above ``after_id`` (keyset pagination)."""
        async def tx(s: AsyncSession) -> list[DoneFile]:
            rows = await s.execute(
                select(File.id, File.job_id, File.record, File.segment, File.dest_path,
                       File.bytes_done, File.sha256)
                .where(File.job_id == job_id, File.id > after_id, File.state == FileState.DONE,
                       NOT_TAR_ROW).order_by(File.id).limit(limit))
            return [DoneFile(*row) for row in rows.all()]
        return await self._run(tx, read_only=True)

    async def mark_files_bad(self, job_id: str, errors: Mapping[int, str]) -> list[DoneFile]:
        """Done files of the job found bad on disk (``errors``: file id -> why) become failed;
        their stored copies are forgotten (never linked or adopted again), their chunks and a
        finished job count them as failed, so ``retry_job`` fetches them again. Returns the
        rows that were marked (those still done)."""
        async def tx(s: AsyncSession) -> list[DoneFile]:
            job = await s.get(Job, job_id)
            if job is None:
                raise NotFound(f"no job with id {job_id!r}")
            rows = [DoneFile(*r) for r in (await s.execute(
                select(File.id, File.job_id, File.record, File.segment, File.dest_path,
                       File.bytes_done, File.sha256)
                .where(File.job_id == job_id, File.id.in_(list(errors)),
                       File.state == FileState.DONE, NOT_TAR_ROW))).all()]
            if rows:
                await self._mark_bad(s, job_id, rows, errors)
            return rows
        return await self._run(tx)

    async def _mark_bad(self, s: AsyncSession, job_id: str, rows: list[DoneFile],
                        errors: Mapping[int, str]) -> None:
        t = self.now()
        for row in rows:
            await s.execute(guarded(File).where(File.id == row.id).values(
                state=FileState.FAILED, error=f"verify: {errors[row.id]}", updated_at=t))
            await self._add_event(s, job_id, "file_verify_failed",
                                  f"{row.record}: {errors[row.id]}")
        await s.execute(delete(StoredFile).where(or_(*[
            and_(StoredFile.path == row.dest_path, StoredFile.sha256 == row.sha256)
            for row in rows])).execution_options(synchronize_session=False))
        chunk_ids = set((await s.execute(select(File.chunk_id).where(
            File.id.in_([r.id for r in rows])))).scalars())
        await recount_chunks(s, chunk_ids)
        await s.execute(guarded(Chunk).where(Chunk.id.in_(chunk_ids),
                                             Chunk.state == ChunkState.DONE)
                        .values(state=ChunkState.FAILED, error="file(s) failed verification",
                                updated_at=t))
        await s.execute(guarded(Job).where(Job.id == job_id, Job.state == JobState.SUCCEEDED)
                        .values(state=JobState.COMPLETED_WITH_ERRORS, updated_at=t))
