"""Outcomes of tar rows (see ``tar_rows``): members placed from a tar, the tar finished or
failed, each fenced by the tar row's lease token and recorded in the same group commits as
every other file outcome.

* ``tar_progress``: the tar row's resume offset and lease move on (with a fresh response's
  validators), and its ``members`` (gathered by the recorder), while they still wait for this
  tar, are done: stored, other jobs' rows placed from them, counters moved, in bulk, in the
  same transaction. A member placed meanwhile from another copy is left as it is.
* ``tar_done``: the tar row is done; members still waiting were not in the tar and fail.
* ``fail`` of a tar row: the members still waiting fail with the same message.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.counters import ChunkDeltas
from service.db.models import File
from service.db.repo_base import UNFENCED, guarded, lease_until, rowcount
from service.db.repo_files import CLEARED, FileOutcome, FilesMixin
from service.db.tar_rows import MemberDone, TarMember, is_tar_key, member_name, tar_host
from service.states import FILE_OPEN, FileState

MEMBERS_PER_STATEMENT = 500


class TarsMixin(FilesMixin):
    """File outcomes, extended with those of tar rows."""

    async def tar_members(self, tar_id: int) -> list[TarMember]:
        """The member rows still waiting for tar row ``tar_id`` (name in the tar, dest)."""
        async def tx(s: AsyncSession) -> list[TarMember]:
            rows = await s.execute(select(File.id, File.url, File.dest_path).where(
                File.host == tar_host(tar_id), File.state == FileState.PENDING).order_by(File.id))
            return [TarMember(file_id, member_name(url) or "", dest)
                    for file_id, url, dest in rows.all()]
        return await self._run(tx, read_only=True)

    async def _apply(self, s: AsyncSession, o: FileOutcome, t: datetime,
                     deltas: ChunkDeltas) -> bool:
        if o.kind == "tar_progress":
            return await self._tar_progress(s, o, t, deltas)
        if o.kind == "tar_done":
            return await self._tar_done(s, o, t, deltas)
        if o.kind == "fail" and is_tar_key(await s.scalar(
                select(File.file_key).where(File.id == o.file_id)) or ""):
            return await self._tar_failed(s, o, t, deltas)
        return await super()._apply(s, o, t, deltas)

    async def _tar_progress(self, s: AsyncSession, o: FileOutcome, t: datetime,
                            deltas: ChunkDeltas) -> bool:
        values: dict[str, Any] = {"updated_at": t, "bytes_done": o.bytes_done or 0}
        if o.lease_seconds is not None:
            values["lease_expires_at"] = lease_until(t, o.lease_seconds)
        if o.etag is not None or o.last_modified is not None:  # a fresh response
            values.update(etag=o.etag, last_modified=o.last_modified)
        held = await s.execute(guarded(File).where(*self._fence(o, (FileState.DOWNLOADING,)))
                               .values(values))
        if rowcount(held) != 1:
            return False
        step = MEMBERS_PER_STATEMENT
        for start in range(0, len(o.members), step):
            await self._members_done(s, o.file_id, o.members[start:start + step], t, deltas)
        return True

    async def _members_done(self, s: AsyncSession, tar_id: int, members: tuple[MemberDone, ...],
                            t: datetime, deltas: ChunkDeltas) -> None:
        """Members still waiting for this tar: done and stored, in bulk (one placed meanwhile
        from another job's copy is left as it is)."""
        query = select(File.id, File.chunk_id, File.file_key, File.dest_path).where(
            File.id.in_([m.file_id for m in members]), File.host == tar_host(tar_id),
            File.state == FileState.PENDING)
        if self.dialect == "postgresql":
            query = query.with_for_update()
        rows = {r.id: r for r in (await s.execute(query)).all()}
        done = {m.file_id: FileOutcome(m.file_id, "done", UNFENCED, sha256=m.sha256,
                                       size=m.size)
                for m in members if m.file_id in rows}
        if done:
            await self._store_done(s, list(done.values()), rows, t, deltas)

    async def _tar_done(self, s: AsyncSession, o: FileOutcome, t: datetime,
                        deltas: ChunkDeltas) -> bool:
        row = (await s.execute(
            guarded(File).where(*self._fence(o, (FileState.DOWNLOADING,)))
            .values(state=FileState.DONE, bytes_done=o.bytes_done or 0, error=None, updated_at=t,
                    **CLEARED)
            .returning(File.job_id, File.url))).one_or_none()
        if row is None:
            return False
        name = row.url.rsplit("/", 1)[-1]
        await self._fail_members(s, o.file_id, row.job_id, f"not in the tar {name}", t, deltas)
        return True

    async def _tar_failed(self, s: AsyncSession, o: FileOutcome, t: datetime,
                          deltas: ChunkDeltas) -> bool:
        values: dict[str, Any] = {"state": FileState.FAILED, "error": o.error, "updated_at": t,
                                  "attempts": File.attempts + 1, **CLEARED}
        if o.bytes_done is not None:
            values["bytes_done"] = o.bytes_done
        job_id = (await s.execute(
            guarded(File).where(*self._fence(o, FILE_OPEN)).values(values)
            .returning(File.job_id))).scalar_one_or_none()
        if job_id is None:
            return False
        await self._fail_members(s, o.file_id, job_id, o.error or "tar failed", t, deltas)
        return True

    async def _fail_members(self, s: AsyncSession, tar_id: int, job_id: str, error: str,
                            t: datetime, deltas: ChunkDeltas) -> int:
        """Fail the members still waiting for the tar (one event for all of them)."""
        chunks = (await s.execute(
            guarded(File).where(File.host == tar_host(tar_id), File.state == FileState.PENDING)
            .values(state=FileState.FAILED, error=error, updated_at=t)
            .returning(File.chunk_id))).scalars().all()
        for chunk_id in chunks:
            deltas.move(chunk_id, FileState.PENDING, FileState.FAILED)
        if chunks:
            await self._add_event(s, job_id, "file_failed",
                                  f"{len(chunks)} file(s) of tar {tar_id}: {error}")
        return len(chunks)
