"""File claims under the cluster-wide per-host connection limit, progress, completion.

A download connection is a file in state ``downloading`` with an unexpired lease; a claim counts
them for the host after locking the host's ``host_slots`` row (Postgres) or inside BEGIN
IMMEDIATE (SQLite), and hands out at most the free slots.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.models import Chunk, Export, File, HostSlot, Job, StoredFile
from service.db.repo_base import (
    FileClaim,
    LeaseLost,
    RepoBase,
    aware,
    fenced,
    guarded,
    lease_until,
)

CLEARED = {"lease_owner": None, "lease_expires_at": None}


def _claimable(t: datetime) -> Any:
    """Pending files that are due, or downloading files whose lease expired."""
    return or_(and_(File.state == "pending",
                    or_(File.next_attempt_at.is_(None), File.next_attempt_at <= t)),
               and_(File.state == "downloading", File.lease_expires_at <= t))


class FilesMixin(RepoBase):
    """Downloads: claim, progress (fenced), finish, fail, retry."""

    async def claim_files_to_download(self, worker_id: str, host: str, *,
                                      max_per_host: int = 1, limit: int = 1,
                                      lease_seconds: float = 300,
                                      now: datetime | None = None) -> list[FileClaim]:
        """Lease up to ``limit`` files of ``host`` without exceeding ``max_per_host`` active
        downloads cluster-wide. Order: job priority, then the least recently served job."""
        if max_per_host < 1 or limit < 1:
            raise ValueError("max_per_host and limit must be at least 1")

        async def tx(s: AsyncSession) -> list[FileClaim]:
            t = self.now(now)
            claimable = (select(File.id).join(Export, Export.id == File.export_id)
                         .join(Job, Job.id == File.job_id)
                         .where(File.host == host, _claimable(t), Export.state == "ready",
                                Job.state == "running"))
            if await s.scalar(claimable.limit(1)) is None:
                return []  # nothing to do: skip the slot lock (and its write)
            await self._lock_slot(s, HostSlot, host, t)
            active = await s.scalar(select(func.count()).where(
                File.host == host, File.state == "downloading", File.lease_expires_at > t))
            free = min(limit, max_per_host - int(active or 0))
            if free <= 0:
                return []
            files = (await s.execute(
                claimable.with_only_columns(File)
                .order_by(Job.priority.desc(), Job.files_served_at.asc().nulls_first(),
                          File.chunk_id, File.id)
                .limit(free).with_for_update(of=File, skip_locked=True))).scalars().all()
            claims = [c for f in files
                      if (c := await self._lease_file(s, f, worker_id, t, lease_seconds))]
            if claims:
                await s.execute(guarded(Chunk).where(Chunk.id.in_({c.chunk_id for c in claims}),
                                                     Chunk.state == "ready")
                                .values(state="downloading", updated_at=t))
                await s.execute(guarded(Job).where(Job.id.in_({c.job_id for c in claims}))
                                .values(files_served_at=t))
            return claims
        return await self._run(tx)

    async def _lease_file(self, s: AsyncSession, f: File, worker_id: str, t: datetime,
                          lease_seconds: float) -> FileClaim | None:
        token = (await s.execute(
            guarded(File).where(File.id == f.id, File.lease_token == f.lease_token)
            .values(state="downloading", lease_owner=worker_id, updated_at=t,
                    lease_expires_at=lease_until(t, lease_seconds),
                    lease_token=File.lease_token + 1)
            .returning(File.lease_token))).scalar_one_or_none()
        if token is None:
            return None
        return FileClaim(f.id, f.job_id, f.chunk_id, f.export_id, f.url, f.host, f.dest_path,
                         f.source_path, f.size_expected, f.bytes_done, f.etag, f.last_modified,
                         f.attempts, token, f.file_key)

    async def list_download_hosts(self, *, now: datetime | None = None) -> list[str]:
        """Hosts that have files ready to claim now."""
        async def tx(s: AsyncSession) -> list[str]:
            t = self.now(now)
            rows = await s.execute(
                select(File.host).distinct().join(Export, Export.id == File.export_id)
                .join(Job, Job.id == File.job_id)
                .where(_claimable(t), Export.state == "ready", Job.state == "running")
                .order_by(File.host))
            return list(rows.scalars())
        return await self._run(tx, read_only=True)

    async def update_file_progress(self, file_id: int, bytes_done: int, lease_token: int, *,
                                   lease_seconds: float | None = None, etag: str | None = None,
                                   last_modified: str | None = None,
                                   now: datetime | None = None) -> bool:
        """Record bytes written so far (and validators); optionally extend the lease.

        False when the lease was taken over: the caller must stop writing the file.
        """
        values: dict[str, Any] = {"bytes_done": bytes_done}
        if etag is not None:
            values["etag"] = etag
        if last_modified is not None:
            values["last_modified"] = last_modified

        async def tx(s: AsyncSession) -> bool:
            t = self.now(now)
            if lease_seconds is not None:
                values["lease_expires_at"] = lease_until(t, lease_seconds)
            result = await s.execute(
                guarded(File).where(File.id == file_id, File.lease_token == lease_token,
                                    File.state == "downloading")
                .values(updated_at=t, **values))
            return result.rowcount == 1
        return await self._run(tx)

    async def finish_file(self, file_id: int, *, sha256: str, size: int,
                          path: str | None = None, lease_token: int | None = None,
                          now: datetime | None = None) -> bool:
        """A verified file is in place (at ``path``, default its dest_path): done, and listed
        in stored_files so no job fetches it again. False when the lease was lost."""
        async def tx(s: AsyncSession) -> bool:
            t = self.now(now)
            cond = [File.id == file_id, File.state == "downloading"]
            if lease_token is not None:
                cond.append(File.lease_token == lease_token)
            values: dict[str, Any] = {"state": "done", "sha256": sha256, "bytes_done": size,
                                      "error": None, "updated_at": t, **CLEARED}
            if path is not None:
                values["dest_path"] = path
            row = (await s.execute(guarded(File).where(*cond).values(values)
                                   .returning(File.chunk_id, File.file_key, File.dest_path))
                   ).one_or_none()
            if row is None:
                raise LeaseLost(f"file {file_id} is no longer leased to the caller")
            await s.execute(self.insert(StoredFile).values(
                file_key=row.file_key, path=row.dest_path, size=size, sha256=sha256,
                created_at=t).on_conflict_do_nothing())
            await self._refresh_chunk(s, row.chunk_id)
            return True
        return await fenced(self._run(tx))

    async def fail_file(self, file_id: int, error: str, *, lease_token: int | None = None,
                        now: datetime | None = None) -> bool:
        """Give up on a file (permanent error or retries exhausted)."""
        return await self._file_outcome(file_id, lease_token, ("pending", "downloading"), now,
                                        state="failed", error=error, event=True,
                                        attempts=File.attempts + 1)

    async def schedule_retry(self, file_id: int, *, next_attempt_at: datetime, error: str,
                             lease_token: int | None = None, bytes_done: int | None = None,
                             now: datetime | None = None) -> bool:
        """Put a downloading file back to pending until ``next_attempt_at`` (attempts + 1)."""
        extra = {} if bytes_done is None else {"bytes_done": bytes_done}
        return await self._file_outcome(file_id, lease_token, ("downloading",), now,
                                        state="pending", error=error,
                                        next_attempt_at=aware(next_attempt_at,
                                                              "next_attempt_at"),
                                        attempts=File.attempts + 1, **extra)

    async def release_file(self, file_id: int, *, lease_token: int,
                           bytes_done: int | None = None, now: datetime | None = None) -> bool:
        """Hand a downloading file back unfinished (shutdown); no attempt is counted."""
        extra = {} if bytes_done is None else {"bytes_done": bytes_done}
        return await self._file_outcome(file_id, lease_token, ("downloading",), now,
                                        state="pending", **extra)

    async def _file_outcome(self, file_id: int, lease_token: int | None,
                            states: tuple[str, ...], now: datetime | None, *,
                            event: bool = False, **values: Any) -> bool:
        async def tx(s: AsyncSession) -> bool:
            t = self.now(now)
            cond = [File.id == file_id, File.state.in_(states)]
            if lease_token is not None:
                cond.append(File.lease_token == lease_token)
            row = (await s.execute(guarded(File).where(*cond)
                                   .values(updated_at=t, **CLEARED, **values)
                                   .returning(File.chunk_id, File.job_id, File.record))
                   ).one_or_none()
            if row is None:
                return False
            if event:
                await self._add_event(s, row.job_id, "file_failed",
                                      f"{row.record}: {values.get('error')}")
            await self._refresh_chunk(s, row.chunk_id)
            return True
        return await self._run(tx)

    async def get_stored_file(self, file_key: str) -> StoredFile | None:
        """The stored copy of a content key, if any."""
        async def tx(s: AsyncSession) -> StoredFile | None:
            return await s.get(StoredFile, file_key)
        return await self._run(tx, read_only=True)

    async def forget_stored_file(self, file_key: str) -> int:
        """The stored copy is gone or bad: drop it; files waiting to copy it fetch from their
        URL again. Returns how many files were redirected."""
        async def tx(s: AsyncSession) -> int:
            await s.execute(delete(StoredFile).where(StoredFile.file_key == file_key)
                            .execution_options(synchronize_session=False))
            waiting = (await s.execute(
                select(File.id, File.url).where(File.file_key == file_key,
                                                File.source_path.is_not(None),
                                                File.state.in_(("pending", "downloading")))
            )).all()
            for file_id, url in waiting:
                await s.execute(guarded(File).where(File.id == file_id).values(
                    source_path=None, host=urlsplit(url).netloc, state="pending",
                    lease_token=File.lease_token + 1, **CLEARED))
            return len(waiting)
        return await self._run(tx)
