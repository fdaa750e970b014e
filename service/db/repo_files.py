"""File claims under the cluster-wide per-host connection limit, and file outcomes recorded in
group commits.

A download connection is a *lane*: a worker's long-lived loop that leases a batch of files of
one host and transfers them back to back over one keep-alive connection. Files leased to a lane
are in state ``downloading`` with the lane's name; a host's active connections are the distinct
lanes holding unexpired leases there (plus files claimed one by one without a lane, each its own
connection). A claim counts them after locking the host's ``host_slots`` row (Postgres) or
inside BEGIN IMMEDIATE (SQLite), so the limit holds across every worker.

Outcomes (done, retry, fail, release, progress) are fenced by the file's lease token and any
number of them are recorded in one transaction (``record_file_outcomes``); the per-file methods
are that with one outcome.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast
from urllib.parse import urlsplit

from sqlalchemy import Row, Table, bindparam, delete, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from service.db.counters import ChunkDeltas
from service.db.errors import LeaseLost
from service.db.models import LOCAL_HOST, Chunk, Export, File, HostSlot, Job, StoredFile
from service.db.repo_base import (
    UNFENCED,
    FileClaim,
    LeaseToken,
    RepoBase,
    aware,
    guarded,
    lease_until,
    rowcount,
)
from service.db.tar_rows import MemberDone, attach_members, member_name
from service.states import FILE_OPEN, ChunkState, ExportState, FileState, JobState

CLEARED = {"lease_owner": None, "lease_expires_at": None, "lane": None}
# what a claim reads of a file (plain rows: no ORM objects for a batch of files)
CLAIMED_COLUMNS = (File.id, File.job_id, File.chunk_id, File.export_id, File.url, File.host,
                   File.dest_path, File.source_path, File.size_expected, File.bytes_done,
                   File.etag, File.last_modified, File.attempts, File.file_key)
OutcomeKind = Literal["done", "retry", "fail", "release", "progress", "tar_progress",
                      "tar_done"]
_Other = aliased(File)


@dataclass(frozen=True)
class FileOutcome:
    """What happened to a leased file, fenced by the claim's ``lease_token`` (``UNFENCED``: by
    the row's state only, for a row nobody leased, e.g. a tar member, which its tar row's lease
    covers).

    Tar rows (see ``tar_rows``): ``tar_progress`` of the tar row records ``members`` done and
    the resume offset ``bytes_done`` (and a fresh response's ``etag``/``last_modified``);
    ``tar_done`` ends it.
    """

    file_id: int
    kind: OutcomeKind
    lease_token: LeaseToken
    sha256: str | None = None
    size: int | None = None
    path: str | None = None  # done: where the file was placed, if not its dest_path
    bytes_done: int | None = None
    error: str | None = None
    next_attempt_at: datetime | None = None
    etag: str | None = None
    last_modified: str | None = None
    lease_seconds: float | None = None  # progress: extend the lease
    members: tuple[MemberDone, ...] = ()  # tar_progress: member rows placed from the tar

    @property
    def settles(self) -> bool:
        """Whether this outcome may close a chunk (a file done or failed)."""
        return self.kind in ("done", "fail", "tar_done") or bool(self.members)


def _claimable(t: datetime, expired: bool) -> list[Any]:
    """Pending files that are due, or (``expired``) downloading files whose lease expired.

    Two separate conditions, each with an equality on ``state``, so the claim walks the
    ``(job_id, host, state, chunk_id, id)`` index in order instead of sorting the job's files.
    """
    if expired:
        return [File.state == FileState.DOWNLOADING, File.lease_expires_at <= t]
    return [File.state == FileState.PENDING,
            or_(File.next_attempt_at.is_(None), File.next_attempt_at <= t)]


def _not_fetched_elsewhere(t: datetime) -> Any:
    """No other row with the same content is being downloaded now (it will be placed from
    that one when it finishes)."""
    return ~exists().where(_Other.file_key == File.file_key, _Other.id != File.id,
                           _Other.state == FileState.DOWNLOADING, _Other.lease_expires_at > t)


def _ready_for(host: str, t: datetime, expired: bool) -> Any:
    """Files of ``host`` that a claim may take now (export ready, job running)."""
    return (select(File.id).join(Export, Export.id == File.export_id)
            .join(Job, Job.id == File.job_id)
            .where(File.host == host, *_claimable(t, expired), Export.state == ExportState.READY,
                   Job.state == JobState.RUNNING, _not_fetched_elsewhere(t)))


async def _has_work(s: AsyncSession, host: str, t: datetime) -> bool:
    for expired in (False, True):
        if await s.scalar(_ready_for(host, t, expired).limit(1)) is not None:
            return True
    return False


class FilesMixin(RepoBase):
    """Downloads: batch claims per lane, outcomes in group commits, stored files."""

    async def claim_file_batch(self, worker_id: str, host: str, *, lane: str | None,
                               max_per_host: int = 1, max_files: int = 1,
                               max_bytes: int | None = None, lease_seconds: float = 300,
                               now: datetime | None = None) -> list[FileClaim]:
        """Lease up to ``max_files`` files (and about ``max_bytes``) of one job on ``host``.

        With a ``lane``, the batch is one connection: granted while the host has fewer than
        ``max_per_host`` other active lanes. Without, each file is a connection. Jobs are
        served by priority, then the least recently served job, one job per batch (so a lane
        alternates between jobs batch by batch).
        """
        if max_per_host < 1 or max_files < 1:
            raise ValueError("max_per_host and max_files must be at least 1")

        async def tx(s: AsyncSession) -> list[FileClaim]:
            t = self.now(now)
            if not await _has_work(s, host, t):
                return []  # nothing to do: skip the slot lock (and its write)
            await self._lock_slot(s, HostSlot, host, t)
            free = max_per_host - await self._active_connections(s, host, lane, t)
            if free <= 0:
                return []
            job_id = await self._next_job(s, host, t)
            if job_id is None:
                return []
            count = max_files if lane is not None else min(max_files, free)
            files = await self._pick_files(s, job_id, host, t, count, max_bytes)
            return await self._lease_files(s, files, worker_id, lane, t, lease_seconds)
        return await self._run(tx)

    async def claim_files_to_download(self, worker_id: str, host: str, *,
                                      max_per_host: int = 1, limit: int = 1,
                                      lease_seconds: float = 300,
                                      now: datetime | None = None) -> list[FileClaim]:
        """Lease up to ``limit`` files of ``host``, each its own connection, without exceeding
        ``max_per_host`` active connections cluster-wide."""
        if max_per_host < 1 or limit < 1:
            raise ValueError("max_per_host and limit must be at least 1")
        return await self.claim_file_batch(worker_id, host, lane=None,
                                           max_per_host=max_per_host, max_files=limit,
                                           lease_seconds=lease_seconds, now=now)

    async def _active_connections(self, s: AsyncSession, host: str, lane: str | None,
                                  t: datetime) -> int:
        lanes, single = (await s.execute(select(
            func.count(File.lane.distinct()).filter(File.lane != (lane or "")),
            func.count().filter(File.lane.is_(None)))
            .where(File.host == host, File.state == FileState.DOWNLOADING,
                   File.lease_expires_at > t))
        ).one()
        return int(lanes or 0) + int(single or 0)

    async def _next_job(self, s: AsyncSession, host: str, t: datetime) -> str | None:
        """The running job to serve next on ``host``: priority, then least recently served."""
        ready = or_(*(_ready_for(host, t, expired).where(File.job_id == Job.id).exists()
                      for expired in (False, True)))
        return await s.scalar(
            select(Job.id).where(Job.state == JobState.RUNNING, ready)
            .order_by(Job.priority.desc(), Job.files_served_at.asc().nulls_first(),
                      Job.created_at, Job.id).limit(1))

    async def _pick_files(self, s: AsyncSession, job_id: str, host: str, t: datetime,
                          count: int, max_bytes: int | None) -> list[Row[Any]]:
        rows: list[Any] = []
        for expired in (True, False):  # work a dead worker left first, then pending files
            rows += (await s.execute(
                select(*CLAIMED_COLUMNS).join(Export, Export.id == File.export_id)
                .where(File.job_id == job_id, File.host == host, *_claimable(t, expired),
                       Export.state == ExportState.READY, _not_fetched_elsewhere(t))
                .order_by(File.chunk_id, File.id).limit(count - len(rows))
                .with_for_update(of=File, skip_locked=True))).all()
            if len(rows) >= count:
                break
        picked: list[Row[Any]] = []
        total = 0
        for f in rows:
            if picked and max_bytes is not None and total + (f.size_expected or 0) > max_bytes:
                break
            picked.append(f)
            total += f.size_expected or 0
        return picked

    async def _lease_files(self, s: AsyncSession, files: Sequence[Row[Any]], worker_id: str,
                           lane: str | None, t: datetime,
                           lease_seconds: float) -> list[FileClaim]:
        if not files:
            return []
        rows = await s.execute(
            guarded(File).where(File.id.in_([f.id for f in files]))
            .values(state=FileState.DOWNLOADING, lease_owner=worker_id, lane=lane, updated_at=t,
                    lease_expires_at=lease_until(t, lease_seconds),
                    lease_token=File.lease_token + 1)
            .returning(File.id, File.lease_token))
        tokens = dict(rows.all())
        await s.execute(guarded(Chunk).where(Chunk.id.in_({f.chunk_id for f in files}),
                                             Chunk.state == ChunkState.READY)
                        .values(state=ChunkState.DOWNLOADING, updated_at=t))
        await s.execute(guarded(Job).where(Job.id == files[0].job_id)
                        .values(files_served_at=t))
        return [FileClaim(f.id, f.job_id, f.chunk_id, f.export_id, f.url, f.host, f.dest_path,
                          f.source_path, f.size_expected, f.bytes_done, f.etag,
                          f.last_modified, f.attempts, tokens[f.id], f.file_key)
                for f in files]

    async def list_download_hosts(self, *, skip: Collection[str] = (),
                                  now: datetime | None = None) -> list[str]:
        """Hosts that have files ready to claim now (known hosts, each checked by index),
        leaving out ``skip`` (hosts whose connections the caller already uses up)."""
        async def tx(s: AsyncSession) -> list[str]:
            t = self.now(now)
            hosts = (await s.execute(select(HostSlot.host).order_by(HostSlot.host))).scalars()
            return [h for h in list(hosts) if h not in skip and await _has_work(s, h, t)]
        return await self._run(tx, read_only=True)

    # -- outcomes ----------------------------------------------------------------------------

    async def record_file_outcomes(self, outcomes: Sequence[FileOutcome], *,
                                   now: datetime | None = None) -> list[bool]:
        """Record many outcomes in one transaction (a group commit). Each result is False when
        that file's lease was lost (fenced) or it was no longer in a matching state: a batch
        reports lost leases per outcome; the one-file methods below raise LeaseLost instead."""
        for o in outcomes:
            if o.next_attempt_at is not None:
                aware(o.next_attempt_at, "next_attempt_at")

        async def tx(s: AsyncSession) -> list[bool]:
            t = self.now(now)
            deltas = ChunkDeltas()
            results: dict[int, bool] = {}
            for o in outcomes:  # progress first: it never follows a final outcome of a lease
                if o.kind == "progress":
                    results[id(o)] = await self._apply_progress(s, o, t)
            done = [o for o in outcomes if o.kind == "done"]
            if done:
                results.update(await self._apply_done(s, done, t, deltas))
            for o in outcomes:
                if o.kind not in ("progress", "done"):
                    results[id(o)] = await self._apply(s, o, t, deltas)
            for chunk_id in await deltas.apply(s):
                await self._refresh_chunk(s, chunk_id)
            return [results[id(o)] for o in outcomes]
        return await self._run(tx)

    async def _apply(self, s: AsyncSession, o: FileOutcome, t: datetime,
                     deltas: ChunkDeltas) -> bool:
        """A retry, failure or release of one file (rare: one statement each)."""
        states = FILE_OPEN if o.kind == "fail" else (FileState.DOWNLOADING,)
        values: dict[str, Any] = {"updated_at": t, **CLEARED}
        if o.bytes_done is not None:
            values["bytes_done"] = o.bytes_done
        if o.kind == "fail":
            values.update(state=FileState.FAILED, error=o.error, attempts=File.attempts + 1)
        elif o.kind == "retry":
            values.update(state=FileState.PENDING, error=o.error, next_attempt_at=o.next_attempt_at,
                          attempts=File.attempts + 1)
        else:
            values.update(state=FileState.PENDING)
        row = (await s.execute(
            guarded(File).where(*self._fence(o, states)).values(values)
            .returning(File.chunk_id, File.job_id, File.record))).one_or_none()
        if row is None:
            return False
        if o.kind == "fail":
            deltas.move(row.chunk_id, FileState.PENDING, FileState.FAILED)
            await self._add_event(s, row.job_id, "file_failed", f"{row.record}: {o.error}")
        elif o.kind == "retry":  # visible on the job while the file waits for its next try
            await self._add_event(s, row.job_id, "file_retry", f"{row.record}: {o.error}",
                                  level="warning")
        return True

    @staticmethod
    def _fence(o: FileOutcome, states: tuple[str, ...]) -> list[Any]:
        cond = [File.id == o.file_id, File.state.in_(states)]
        if o.lease_token is not UNFENCED:
            cond.append(File.lease_token == o.lease_token)
        return cond

    async def _apply_progress(self, s: AsyncSession, o: FileOutcome, t: datetime) -> bool:
        values: dict[str, Any] = {"updated_at": t}
        for name in ("bytes_done", "etag", "last_modified"):
            if getattr(o, name) is not None:
                values[name] = getattr(o, name)
        if o.lease_seconds is not None:
            values["lease_expires_at"] = lease_until(t, o.lease_seconds)
        result = await s.execute(guarded(File).where(*self._fence(o, (FileState.DOWNLOADING,)))
                                 .values(values))
        return rowcount(result) == 1

    async def _apply_done(self, s: AsyncSession, outcomes: list[FileOutcome], t: datetime,
                          deltas: ChunkDeltas) -> dict[int, bool]:
        """Finished files, in a few statements whatever their number: read and lock the rows,
        keep those whose fence holds, then update them and list them as stored in bulk."""
        for o in outcomes:
            if o.sha256 is None or o.size is None:
                raise ValueError(f"file {o.file_id}: a done outcome needs sha256 and size")
        query = select(File.id, File.lease_token, File.state, File.chunk_id, File.file_key,
                       File.dest_path).where(File.id.in_([o.file_id for o in outcomes]))
        if self.dialect == "postgresql":
            query = query.with_for_update()
        rows = {r.id: r for r in (await s.execute(query)).all()}
        held = [o for o in outcomes if (r := rows.get(o.file_id)) is not None
                and r.state == FileState.DOWNLOADING
                and (o.lease_token is UNFENCED or o.lease_token == r.lease_token)]
        if held:
            await self._store_done(s, held, rows, t, deltas)
        kept = {id(o) for o in held}
        return {id(o): id(o) in kept for o in outcomes}

    async def _store_done(self, s: AsyncSession, held: list[FileOutcome], rows: dict[int, Any],
                          t: datetime, deltas: ChunkDeltas) -> None:
        # cast: a declarative model maps one Table; DeclarativeBase types __table__ FromClause
        table, conn = cast(Table, File.__table__), await s.connection()
        params: list[dict[str, Any]] = [
            {"b_id": o.file_id, "b_sha": o.sha256, "b_size": o.size,
             "b_path": o.path or rows[o.file_id].dest_path} for o in held]
        await conn.execute(
            table.update().where(table.c.id == bindparam("b_id"))
            .values(state=FileState.DONE, sha256=bindparam("b_sha"), bytes_done=bindparam("b_size"),
                    dest_path=bindparam("b_path"), error=None, updated_at=t, **CLEARED),
            params)
        await conn.execute(self.insert(StoredFile.__table__).on_conflict_do_nothing(), [
            {"file_key": rows[p["b_id"]].file_key, "path": p["b_path"], "size": p["b_size"],
             "sha256": p["b_sha"], "created_at": t} for p in params])
        for o in held:
            deltas.move(rows[o.file_id].chunk_id, FileState.DOWNLOADING, FileState.DONE,
                        o.size or 0)
        await self._place_twins(s, {rows[p["b_id"]].file_key: p for p in params}, t, deltas)

    async def _place_twins(self, s: AsyncSession, done: dict[str, dict[str, Any]],
                           t: datetime, deltas: ChunkDeltas) -> None:
        """Other jobs' pending rows of content just finished (``done``: key -> the finished
        file's params): done in place when they want the same path, else copied from it
        (host ``local``) instead of fetched again."""
        twins = (await s.execute(
            select(File.id, File.chunk_id, File.dest_path, File.file_key)
            .where(File.file_key.in_(list(done)), File.state == FileState.PENDING,
                   File.source_path.is_(None)))).all()
        for twin_id, chunk_id, dest, key in twins:
            first = done[key]
            if dest == first["b_path"]:
                await s.execute(guarded(File).where(File.id == twin_id).values(
                    state=FileState.DONE, sha256=first["b_sha"], bytes_done=first["b_size"],
                    updated_at=t, **CLEARED))
                deltas.move(chunk_id, FileState.PENDING, FileState.DONE, first["b_size"])
            else:
                await s.execute(guarded(File).where(File.id == twin_id).values(
                    host=LOCAL_HOST, source_path=first["b_path"], updated_at=t))
        if twins:
            await self._register_hosts(s, [LOCAL_HOST])

    async def update_file_progress(self, file_id: int, bytes_done: int, lease_token: int, *,
                                   lease_seconds: float | None = None, etag: str | None = None,
                                   last_modified: str | None = None,
                                   now: datetime | None = None) -> bool:
        """Record bytes written so far (and validators); optionally extend the lease.

        Raises LeaseLost when the lease was taken over: the caller must stop writing the file.
        """
        return await self._one(FileOutcome(file_id, "progress", lease_token,
                                           bytes_done=bytes_done, etag=etag,
                                           last_modified=last_modified,
                                           lease_seconds=lease_seconds), now)

    async def finish_file(self, file_id: int, *, sha256: str, size: int,
                          path: str | None = None, lease_token: LeaseToken,
                          now: datetime | None = None) -> bool:
        """A verified file is in place (at ``path``, default its dest_path): done, and listed
        in stored_files so no job fetches it again. Raises LeaseLost when the lease was lost."""
        return await self._one(FileOutcome(file_id, "done", lease_token, sha256=sha256,
                                           size=size, path=path), now)

    async def fail_file(self, file_id: int, error: str, *, lease_token: LeaseToken,
                        now: datetime | None = None) -> bool:
        """Give up on a file (permanent error or retries exhausted)."""
        return await self._one(FileOutcome(file_id, "fail", lease_token, error=error), now)

    async def schedule_retry(self, file_id: int, *, next_attempt_at: datetime, error: str,
                             lease_token: LeaseToken, bytes_done: int | None = None,
                             now: datetime | None = None) -> bool:
        """Put a downloading file back to pending until ``next_attempt_at`` (attempts + 1)."""
        return await self._one(FileOutcome(file_id, "retry", lease_token, error=error,
                                           next_attempt_at=next_attempt_at,
                                           bytes_done=bytes_done), now)

    async def _one(self, outcome: FileOutcome, now: datetime | None) -> bool:
        """One outcome in its own transaction: True, or LeaseLost when it was not recorded."""
        [result] = await self.record_file_outcomes([outcome], now=now)
        if not result:
            raise LeaseLost(f"file {outcome.file_id}: lease taken over, or no longer in a "
                            f"state that allows {outcome.kind!r}")
        return result

    # -- stored files ------------------------------------------------------------------------

    async def get_stored_file(self, file_key: str) -> StoredFile | None:
        """The stored copy of a content key, if any."""
        async def tx(s: AsyncSession) -> StoredFile | None:
            return await s.get(StoredFile, file_key)
        return await self._run(tx, read_only=True)

    async def stored_key_at(self, path: str) -> str | None:
        """The content key recorded for a file placed at ``path``, if any."""
        async def tx(s: AsyncSession) -> str | None:
            return await s.scalar(select(StoredFile.file_key).where(StoredFile.path == path)
                                  .limit(1))
        return await self._run(tx, read_only=True)

    async def forget_stored_file(self, file_key: str) -> int:
        """The stored copy is gone or bad: drop it; files waiting to copy it fetch from their
        URL again. Returns how many files were redirected."""
        async def tx(s: AsyncSession) -> int:
            await s.execute(delete(StoredFile).where(StoredFile.file_key == file_key)
                            .execution_options(synchronize_session=False))
            waiting = (await s.execute(
                select(File.id, File.url, File.export_id)
                .where(File.file_key == file_key, File.source_path.is_not(None),
                       File.state.in_(FILE_OPEN))
            )).all()
            for file_id, url, _ in waiting:
                await s.execute(guarded(File).where(File.id == file_id).values(
                    source_path=None, host=urlsplit(url).netloc, state=FileState.PENDING,
                    lease_token=File.lease_token + 1, **CLEARED))
            await self._register_hosts(s, [urlsplit(url).netloc for _, url, _ in waiting])
            await attach_members(s, [e for _, url, e in waiting if member_name(url) and e],
                                 self.now())  # tar members wait for their tar again
            return len(waiting)
        return await self._run(tx)
