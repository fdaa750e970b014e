"""Export outcomes: ready (file rows created, stored copies reused), expired, failed, split."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.counters import recount_chunks
from service.db.errors import LeaseLost
from service.db.models import LOCAL_HOST, Chunk, Export, File, StoredFile
from service.db.repo_base import UNFENCED, LeaseToken, RepoBase, aware, guarded
from service.db.repo_staging import keep_sample, staged_sample
from service.db.tar_rows import attach_members, finish_idle_tars
from service.states import (
    CHUNK_OPEN,
    CHUNK_UNLISTED,
    EXPORT_EXPIRABLE,
    EXPORT_PENDING,
    FILE_OPEN,
    ChunkState,
    ExportState,
    FileState,
)

EXPORT_RETENTION = timedelta(days=7)  # docs/jsoc-protocol.md §7.6
MAX_LISTED_FAILURE_EVENTS = 1000  # rows looked at for failed-on-listing events (bounded anyway)
FILE_FIELDS = {"record", "segment", "file_key", "url", "dest_path", "size_expected", "error"}
CLEARED = {"lease_owner": None, "lease_expires_at": None}
FILE_CLEARED = {**CLEARED, "lane": None}


def file_rows(files: Sequence[Mapping[str, Any]], *, job_id: str, chunk_id: int,
              export_id: int, protocol: str | None, now: datetime) -> list[dict[str, Any]]:
    """Validate listed-file dicts and turn them into rows (host from the URL; default key)."""
    rows = []
    for i, f in enumerate(files):
        unknown = set(f) - FILE_FIELDS
        missing = {"record", "url", "dest_path"} - set(f)
        if unknown or missing:
            raise ValueError(f"file {i}: missing {sorted(missing)} / unknown {sorted(unknown)}; "
                             f"accepted fields: {sorted(FILE_FIELDS)}")
        host = urlsplit(f["url"]).netloc
        if not host:
            raise ValueError(f"file {i}: url {f['url']!r} is not an absolute http(s) URL")
        key = f.get("file_key") or f"{protocol or ''}:{f['record']}:{f.get('segment') or ''}"
        rows.append({"job_id": job_id, "chunk_id": chunk_id, "export_id": export_id,
                     "record": f["record"], "segment": f.get("segment"), "file_key": key,
                     "url": f["url"], "host": host, "dest_path": f["dest_path"],
                     "size_expected": f.get("size_expected"),
                     "state": FileState.FAILED if f.get("error") else FileState.PENDING,
                     "error": f.get("error"),
                     "created_at": now, "updated_at": now})
    return rows


class OutcomesMixin(RepoBase):
    """What happens to an export after submission."""

    async def record_export_ready(self, export_id: int, *, files: Sequence[Mapping[str, Any]],
                                  lease_token: LeaseToken,
                                  index: dict[str, Any] | None = None,
                                  expires_at: datetime | None = None,
                                  request_id: str | None = None, method: str | None = None,
                                  protocol: str | None = None,
                                  seen_ready_at: datetime | None = None,
                                  now: datetime | None = None) -> int | None:
        """Mark the export ready and create its file rows; returns how many need fetching.

        Each file: ``record``, ``url``, ``dest_path`` (required), ``segment``, ``size_expected``,
        ``file_key`` (content identity; default ``"<protocol>:<record>:<segment>"``), ``error``
        (the file cannot be fetched, e.g. a bad name from JSOC: it is listed failed). A url-tar
        export lists its tar row and its members (see ``tar_rows``). A file the job already has
        keeps its progress (a re-export only refreshes its URL); a file already in stored_files
        is done if stored at the same path, else copied from there (``source_path``, host
        ``"local"``). Raises LeaseLost when the lease was lost.

        Token: the poll claim's token; for a quick export answered at once (status 0 from
        exp_request) call this straight from ``reserving`` with the chunk claim's token and
        pass ``request_id``/``method``/``protocol`` here.

        A staged export also leaves a staging observation (``repo_staging``), from its
        ``submitted_at`` to ``seen_ready_at`` (when JSOC's status 0 arrived; default now).
        """
        if expires_at is not None:
            aware(expires_at, "expires_at")

        async def tx(s: AsyncSession) -> int:
            t = self.now(now)
            export = await self._fenced_export(s, export_id, lease_token, EXPORT_PENDING)
            given: dict[str, str | datetime]
            given = {k: v for k, v in (("request_id", request_id), ("method", method),
                                       ("protocol", protocol)) if v is not None}
            if export.state == ExportState.RESERVING:
                given["submitted_at"] = t
            rows = file_rows(files, job_id=export.job_id, chunk_id=export.chunk_id,
                             export_id=export_id, protocol=protocol or export.protocol, now=t)
            sample = staged_sample(export, rows, index, seen_ready_at or t)
            if sample is not None:
                await keep_sample(s, sample, t)
            await s.execute(guarded(Export).where(Export.id == export_id).values(
                state=ExportState.READY, jsoc_status=0, index=index, ready_at=t, updated_at=t,
                expires_at=expires_at or t + EXPORT_RETENTION, **given, **CLEARED))
            await s.execute(guarded(Chunk).where(Chunk.id == export.chunk_id,
                                                 Chunk.state == ChunkState.EXPORTING)
                            .values(state=ChunkState.READY, updated_at=t, **CLEARED))
            await self._upsert_files(s, rows)
            await self._listing_failures(s, export.job_id, rows)
            await attach_members(s, [export_id], t)
            await self._reuse_stored(s, export_id, t)
            await finish_idle_tars(s, t, File.export_id == export_id)
            await self._register_hosts(s, {r["host"] for r in rows} | {LOCAL_HOST})
            await recount_chunks(s, [export.chunk_id])
            return await self._pending_after_listing(s, export.chunk_id)
        return await self._run(tx)

    async def _pending_after_listing(self, s: AsyncSession, chunk_id: int) -> int:
        """Refresh the chunk's state; how many of its files are left to fetch."""
        todo = await s.scalar(select(func.count()).where(File.chunk_id == chunk_id,
                                                     File.state == FileState.PENDING))
        await self._refresh_chunk(s, chunk_id)
        return int(todo or 0)

    async def _listing_failures(self, s: AsyncSession, job_id: str,
                                rows: list[dict[str, Any]]) -> None:
        """A job event for each listed file that cannot be fetched (bounded)."""
        for row in rows[:MAX_LISTED_FAILURE_EVENTS]:
            if row["error"]:
                await self._add_event(s, job_id, "file_failed", f"{row['record']}: {row['error']}")

    async def _upsert_files(self, s: AsyncSession, rows: list[dict[str, Any]]) -> None:
        """Insert the listed files (one executemany); a file the job already has keeps its
        state and progress and only gets the new export's URL and destination."""
        if not rows:
            return
        stmt = self.insert(File.__table__)
        refresh = {c: stmt.excluded[c] for c in ("export_id", "chunk_id", "url", "host",
                                                 "dest_path", "size_expected", "updated_at")}
        conn = await s.connection()
        await conn.execute(stmt.on_conflict_do_update(
            index_elements=["job_id", "file_key"], set_=refresh,
            where=File.__table__.c.state != FileState.DONE), rows)

    async def _reuse_stored(self, s: AsyncSession, export_id: int, t: datetime) -> None:
        """Files whose content is already stored: done in place, or copied from the store."""
        stored = select(StoredFile).where(StoredFile.file_key == File.file_key)
        same_path = stored.where(StoredFile.path == File.dest_path)
        pending = and_(File.export_id == export_id, File.state == FileState.PENDING)
        await s.execute(guarded(File).where(pending, same_path.exists()).values(
            state=FileState.DONE, updated_at=t, source_path=None,
            bytes_done=same_path.with_only_columns(StoredFile.size).scalar_subquery(),
            sha256=same_path.with_only_columns(StoredFile.sha256).scalar_subquery()))
        await s.execute(guarded(File).where(pending, stored.exists()).values(
            host=LOCAL_HOST, updated_at=t,
            source_path=stored.with_only_columns(StoredFile.path).scalar_subquery()))

    async def mark_export_expired(self, export_id: int, *, error: str | None = None,
                                  now: datetime | None = None) -> bool:
        """The export's files are gone (JSOC status 5 / 7-day limit): the chunk is planned
        again and its unfinished files wait for the new export (their leases are revoked)."""
        async def tx(s: AsyncSession) -> bool:
            t = self.now(now)
            chunk_id = (await s.execute(
                guarded(Export).where(Export.id == export_id,
                                      Export.state.in_(EXPORT_EXPIRABLE))
                .values(state=ExportState.EXPIRED, error=error, updated_at=t, **CLEARED)
                .returning(Export.chunk_id))).scalar_one_or_none()
            if chunk_id is None:
                return False
            await s.execute(guarded(File).where(File.chunk_id == chunk_id,
                                                File.state.in_(FILE_OPEN))
                            .values(state=FileState.PENDING, lease_token=File.lease_token + 1,
                                    updated_at=t, **FILE_CLEARED))
            job_id = (await s.execute(
                guarded(Chunk).where(Chunk.id == chunk_id, Chunk.state.in_(CHUNK_OPEN))
                .values(state=ChunkState.PLANNED, next_attempt_at=None, updated_at=t, **CLEARED)
                .returning(Chunk.job_id))).scalar_one_or_none()
            if job_id is not None:
                await self._add_event(s, job_id, "export_expired",
                                      f"export {export_id} expired: {error or 're-exporting'}",
                                      level="warning")
            return True
        return await self._run(tx)

    async def fail_export(self, export_id: int, *, error: str, lease_token: LeaseToken,
                          jsoc_status: int | None = None, retry_at: datetime | None = None,
                          now: datetime | None = None) -> bool:
        """The export failed. With ``retry_at`` its chunk is planned again from then (attempts
        counted); without, the chunk fails. Raises LeaseLost when the lease was lost."""
        if retry_at is not None:
            aware(retry_at, "retry_at")
        async def tx(s: AsyncSession) -> bool:
            t = self.now(now)
            export = await self._fenced_export(s, export_id, lease_token, EXPORT_PENDING)
            await s.execute(guarded(Export).where(Export.id == export_id).values(
                state=ExportState.ERROR, error=error, jsoc_status=jsoc_status, updated_at=t,
                **CLEARED))
            if retry_at is None:
                await self._fail_chunk(s, export.chunk_id, error)
                return True
            await s.execute(guarded(Chunk).where(Chunk.id == export.chunk_id,
                                                 Chunk.state == ChunkState.EXPORTING)
                            .values(state=ChunkState.PLANNED, attempts=Chunk.attempts + 1,
                                    error=error, next_attempt_at=retry_at, updated_at=t, **CLEARED))
            return True
        return await self._run(tx)

    async def _fail_chunk(self, s: AsyncSession, chunk_id: int, message: str) -> None:
        t = self.now()
        await s.execute(guarded(Export).where(Export.chunk_id == chunk_id,
                                              Export.state.in_(EXPORT_PENDING))
                        .values(state=ExportState.ERROR, error=message, updated_at=t, **CLEARED))
        await s.execute(guarded(File).where(File.chunk_id == chunk_id,
                                            File.state.in_(FILE_OPEN))
                        .values(state=FileState.FAILED, error=message, updated_at=t,
                                **FILE_CLEARED))
        await recount_chunks(s, [chunk_id])
        job_id = (await s.execute(
            guarded(Chunk).where(Chunk.id == chunk_id, Chunk.state.in_(CHUNK_OPEN))
            .values(state=ChunkState.FAILED, error=message, updated_at=t, **CLEARED)
            .returning(Chunk.job_id))).scalar_one_or_none()
        if job_id is not None:
            await self._add_event(s, job_id, "chunk_failed", f"chunk {chunk_id}: {message}")
            await self._refresh_job(s, job_id)

    async def split_chunk(self, chunk_id: int, children: Sequence[Mapping[str, Any]], *,
                          lease_token: LeaseToken,
                          reason: str = "export too large (JSOC status 3)") -> list[int]:
        """Replace a planned/exporting chunk by smaller ones (same seq, parts "0", "1", …).

        Its pending export is closed. Idempotent: splitting again returns the same children.
        Each child: ``recordset`` (required), ``start_time``, ``end_time``, ``est_records``,
        ``est_bytes``. Raises LeaseLost when the chunk's lease was taken over.
        """
        if len(children) < 2:
            raise ValueError("split_chunk needs at least two children")

        async def tx(s: AsyncSession) -> list[int]:
            t = self.now()
            parent = await s.get(Chunk, chunk_id)
            if parent is None:
                raise LeaseLost(f"chunk {chunk_id} no longer exists")
            if lease_token is not UNFENCED and parent.lease_token != lease_token:
                raise LeaseLost(f"lease on chunk {chunk_id} was taken over")
            prefix = f"{parent.part}." if parent.part else ""
            if parent.state in CHUNK_UNLISTED:
                rows = [_child_row(parent, f"{prefix}{i}", c, t) for i, c in enumerate(children)]
                await s.execute(self.insert(Chunk).values(rows).on_conflict_do_nothing(
                    index_elements=["job_id", "seq", "part"]))
                await s.execute(guarded(Export).where(Export.chunk_id == chunk_id,
                                                      Export.state.in_(EXPORT_PENDING))
                                .values(state=ExportState.ERROR, error=reason, jsoc_status=3,
                                        updated_at=t, **CLEARED))
                await s.execute(guarded(Chunk).where(Chunk.id == chunk_id)
                                .values(state=ChunkState.SPLIT, error=reason, updated_at=t,
                                        **CLEARED))
                await self._add_event(s, parent.job_id, "chunk_split",
                                      f"chunk {chunk_id} split in {len(children)}: {reason}",
                                      level="info")
            elif parent.state != ChunkState.SPLIT:
                raise LeaseLost(f"chunk {chunk_id} is {parent.state}; cannot split it")
            ids = await s.execute(select(Chunk.id).where(Chunk.parent_id == chunk_id)
                                  .order_by(Chunk.part))
            return list(ids.scalars())
        return await self._run(tx)


def _child_row(parent: Chunk, part: str, child: Mapping[str, Any],
               t: datetime) -> dict[str, Any]:
    if not isinstance(child.get("recordset"), str) or not child["recordset"]:
        raise ValueError(f"split child {part}: recordset must be a non-empty string")
    extra = set(child) - {"recordset", "start_time", "end_time", "est_records", "est_bytes"}
    if extra:
        raise ValueError(f"split child {part}: unknown field(s) {sorted(extra)}")
    return {"job_id": parent.job_id, "seq": parent.seq, "part": part, "parent_id": parent.id,
            "state": ChunkState.PLANNED, "created_at": t, "updated_at": t, "start_time": None,
            "end_time": None, "est_records": None, "est_bytes": None, **child}
