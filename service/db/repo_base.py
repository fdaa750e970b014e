"""Shared machinery of the repository: transactions, dialect helpers, fencing, claim records.

Every public repository method runs one short transaction through ``RepoBase._run``. On SQLite
the transaction begins IMMEDIATE (one writer at a time); on Postgres claims lock what they need
with ``SELECT … FOR UPDATE [SKIP LOCKED]`` and a transaction that loses a deadlock is retried.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, Final, Literal, Self, TypeVar

from sqlalchemy import ColumnElement, Update, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import CursorResult, Result
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from service.db.engine import make_engine, session_factory
from service.db.errors import LeaseLost
from service.db.models import Chunk, Export, HostSlot, Job, JobEvent, utcnow
from service.ops import metrics
from service.states import CHUNK_LISTED, CHUNK_OPEN, ChunkState, ExportState, JobState

T = TypeVar("T")
MAX_TX_ATTEMPTS = 6
MAX_EVENTS_PER_JOB = 50
RETRYABLE_SQLSTATES = {"40P01", "40001", "55P03"}  # deadlock, serialization, lock not available


class Unfenced(Enum):
    """The type of ``UNFENCED``."""

    UNFENCED = "unfenced"


# Passed as ``lease_token`` by a caller that holds no lease and acts anyway (an admin action,
# a test setting up rows, the split of a chunk whose export a poll found too large): the write
# is then checked against the row's state only, never against a fencing token.
UNFENCED: Final = Unfenced.UNFENCED
LeaseToken = int | Literal[Unfenced.UNFENCED]


@dataclass(frozen=True)
class PlanClaim:
    """A job leased for planning, with its planning cursor."""

    job_id: str
    spec: dict[str, Any]
    planned_until: str | None
    next_seq: int
    follow: bool
    covered_until: str | None
    lease_token: int


@dataclass(frozen=True)
class StoredChunk:
    """What a stored chunk says about itself: its record set, time range (end excluded) and
    byte estimate, enough to rebuild its plan (``service/planning/stored.py``)."""

    seq: int
    part: str
    recordset: str
    start_time: str | None
    end_time: str | None
    est_bytes: int | None

    @classmethod
    def of(cls, chunk: Chunk) -> StoredChunk:
        return cls(chunk.seq, chunk.part, chunk.recordset, chunk.start_time, chunk.end_time,
                   chunk.est_bytes)


@dataclass(frozen=True)
class ExportClaim:
    """A chunk leased for export submission, with its reserved export row.

    ``resumed`` is True when a dead worker's reservation was taken over: that worker may have
    submitted already without recording the request id.
    """

    export_id: int
    chunk_id: int
    job_id: str
    chunk: StoredChunk
    notify_email: str
    spec: dict[str, Any]
    lease_token: int
    resumed: bool = False
    est_records: int | None = None


@dataclass(frozen=True)
class PollClaim:
    """An export leased for one status poll."""

    export_id: int
    request_id: str | None
    chunk_id: int
    job_id: str
    notify_email: str
    method: str | None
    protocol: str | None
    polls: int
    lease_token: int


@dataclass(frozen=True)
class FileClaim:
    """A file leased for downloading (or, with ``source_path``, for copying a stored file)."""

    file_id: int
    job_id: str
    chunk_id: int
    export_id: int | None
    url: str
    host: str
    dest_path: str
    source_path: str | None
    size_expected: int | None
    bytes_done: int
    etag: str | None
    last_modified: str | None
    attempts: int
    lease_token: int
    file_key: str


@dataclass
class JobSummary:
    """Counts by state, byte totals and recent events of one job."""

    job: Job
    chunks: dict[str, int] = field(default_factory=dict)
    exports: dict[str, int] = field(default_factory=dict)
    files: dict[str, int] = field(default_factory=dict)
    bytes_done: int = 0
    bytes_expected: int = 0
    est_bytes: int = 0
    est_unlisted: int = 0  # the part of est_bytes in chunks whose files are not listed yet
    recent_events: list[JobEvent] = field(default_factory=list)


def lease_free(model: Any, now: datetime) -> ColumnElement[bool]:
    """SQL condition: nobody holds the row's lease, or the lease has expired."""
    return or_(model.lease_owner.is_(None), model.lease_expires_at <= now)


def guarded(model: Any) -> Update:
    """An UPDATE that does not try to synchronise ORM objects (we reload when needed)."""
    return update(model).execution_options(synchronize_session=False)


def rowcount(result: Result[Any]) -> int:
    """Rows an UPDATE/DELETE/INSERT matched. ``AsyncSession.execute`` is typed to return a
    ``Result``; for these statements it is a ``CursorResult``, which carries the count."""
    if not isinstance(result, CursorResult):
        raise TypeError(f"no rowcount on {type(result).__name__}: not a DML statement's result")
    return result.rowcount


def _operation(fn: Callable[..., Any]) -> str:
    """The repository method a transaction function belongs to (``list_jobs`` for
    ``JobsMixin.list_jobs.<locals>.tx``): the metric label of its latency."""
    parts = fn.__qualname__.split(".")
    return parts[1] if len(parts) > 2 and parts[2] == "<locals>" else parts[-1]


def _is_retryable(exc: DBAPIError) -> bool:
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return code in RETRYABLE_SQLSTATES or "database is locked" in str(exc.orig)


def check_states(value: str | Sequence[str] | None, allowed: Sequence[str], what: str) -> list[str]:
    """Normalise a state filter; unknown states raise ValueError naming the accepted ones."""
    if value is None:
        return []
    states = [value] if isinstance(value, str) else list(value)
    bad = [s for s in states if s not in allowed]
    if bad:
        raise ValueError(f"unknown {what} state {bad[0]!r}; expected one of {', '.join(allowed)}")
    return states


class RepoBase:
    """Engine, clock and transaction runner shared by the repository mixins."""

    def __init__(self, engine: AsyncEngine, *, clock: Callable[[], datetime] | None = None,
                 owns_engine: bool = False) -> None:
        self.engine = engine
        self.clock = clock or utcnow
        self._sessions = session_factory(engine)
        self._owns_engine = owns_engine
        self.listeners: list[Callable[[str], None]] = []  # in-process: new work appeared
        # SQLite has one writer: queue this process's write transactions here rather than in
        # SQLite's busy handler, which sleeps in steps of up to 100 ms
        self._write_lock = asyncio.Lock() if self.dialect == "sqlite" else None

    def _changed(self, what: str) -> None:
        """Tell in-process listeners (the worker's stage loops) that work may have appeared."""
        for listener in list(self.listeners):
            listener(what)

    @classmethod
    def from_url(cls, url: str, *, clock: Callable[[], datetime] | None = None,
                 **engine_kwargs: Any) -> Self:
        """A repository with its own engine (closed by ``close``)."""
        return cls(make_engine(url, **engine_kwargs), clock=clock, owns_engine=True)

    def sibling(self, **engine_kwargs: Any) -> Self:
        """A repository on the same database with its own engine and connection pool (so the
        API's requests never wait for a connection the workers hold, nor the other way round),
        sharing this one's listeners and, on SQLite, its write queue. Closed by ``close``."""
        other = type(self)(make_engine(self.engine.url, **engine_kwargs), clock=self.clock,
                           owns_engine=True)
        other.listeners = self.listeners
        other._write_lock = self._write_lock
        return other

    async def close(self) -> None:
        """Dispose of the engine if this repository created it."""
        if self._owns_engine:
            await self.engine.dispose()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def now(self, now: datetime | None = None) -> datetime:
        """``now`` if given, else the repository clock (timezone-aware UTC)."""
        return aware(now, "now") if now is not None else self.clock()

    def insert(self, model: Any) -> Any:
        """A dialect-specific INSERT supporting ON CONFLICT."""
        return pg_insert(model) if self.dialect == "postgresql" else sqlite_insert(model)

    async def _run(self, fn: Callable[..., Awaitable[T]], *args: Any,
                   read_only: bool = False) -> T:
        """Run ``fn(session, *args)`` in one transaction, retrying lost deadlocks."""
        started = time.monotonic()
        try:
            return await self._attempts(fn, args, read_only)
        finally:
            metrics.DB_TX_SECONDS.labels(_operation(fn)).observe(time.monotonic() - started)

    async def _attempts(self, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...],
                        read_only: bool) -> T:
        options = {"sqlite_begin": "DEFERRED"} if read_only and self.dialect == "sqlite" else {}
        lock = None if read_only else self._write_lock
        for attempt in range(MAX_TX_ATTEMPTS):
            try:
                async with _held(lock), self._sessions() as session, session.begin():
                    if options:
                        await session.connection(execution_options=options)
                    return await fn(session, *args)
            except DBAPIError as exc:
                if attempt == MAX_TX_ATTEMPTS - 1 or not _is_retryable(exc):
                    raise
            await asyncio.sleep(random.uniform(0, 0.02 * 2**attempt))  # backoff, not a wait
        raise AssertionError("unreachable")

    async def _fenced_export(self, s: AsyncSession, export_id: int, lease_token: LeaseToken,
                             states: tuple[str, ...]) -> Export:
        """Lock the export; raise LeaseLost unless it is in ``states`` and the caller's token
        is current (the chunk's token while reserving, the export's token afterwards)."""
        row = (await s.execute(
            select(Export, Chunk.lease_token).join(Chunk, Chunk.id == Export.chunk_id)
            .where(Export.id == export_id).with_for_update(of=Export))).one_or_none()
        if row is None:
            raise LeaseLost(f"export {export_id} no longer exists")
        export, chunk_token = row
        if export.state not in states:
            raise LeaseLost(f"export {export_id} is {export.state}, not {'/'.join(states)}")
        current = chunk_token if export.state == ExportState.RESERVING else export.lease_token
        if lease_token is not UNFENCED and lease_token != current:
            raise LeaseLost(f"lease on export {export_id} was taken over")
        return export

    async def _lock_slot(self, s: AsyncSession, model: Any, key: str, now: datetime) -> None:
        """Create the lock row if needed (it also lists the email or host) and lock it on
        Postgres; on SQLite every write transaction holds the database's write lock from its
        first statement (BEGIN IMMEDIATE), so there is nothing more to lock."""
        column = next(iter(model.__table__.primary_key.columns))
        await s.execute(self.insert(model).values({column.name: key, "last_claim_at": now})
                        .on_conflict_do_nothing())
        if self.dialect == "sqlite":
            return
        await s.execute(select(column).where(column == key).with_for_update())
        await s.execute(guarded(model).where(column == key).values(last_claim_at=now))

    async def _add_event(self, s: AsyncSession, job_id: str, kind: str, message: str,
                         level: str = "error") -> None:
        """Record an event and keep only the newest MAX_EVENTS_PER_JOB of the job."""
        s.add(JobEvent(job_id=job_id, kind=kind, message=message[:4000], level=level,
                       at=self.now()))
        await s.flush()
        cutoff = (select(JobEvent.id).where(JobEvent.job_id == job_id)
                  .order_by(JobEvent.id.desc()).offset(MAX_EVENTS_PER_JOB).limit(1)
                  .scalar_subquery())
        await s.execute(delete(JobEvent).where(JobEvent.job_id == job_id, JobEvent.id <= cutoff)
                        .execution_options(synchronize_session=False))

    async def _register_hosts(self, s: AsyncSession, hosts: Iterable[str]) -> None:
        """Make download hosts known (``host_slots``), so claims can list them cheaply."""
        for host in sorted(set(hosts)):
            await s.execute(self.insert(HostSlot).values(host=host).on_conflict_do_nothing())

    async def _refresh_chunk(self, s: AsyncSession, chunk_id: int) -> None:
        """Close a ready/downloading chunk once none of its files is open (pending or
        downloading), from the chunk's counters.

        The chunk row is locked first: two files finishing at once in different transactions
        are serialised on it, so the second sees the first's counter change.
        """
        row = (await s.execute(select(Chunk.state, Chunk.files_open, Chunk.files_failed)
                               .where(Chunk.id == chunk_id).with_for_update())).one_or_none()
        if row is None or row.state not in CHUNK_LISTED or row.files_open > 0:
            return
        failed = row.files_failed
        result = await s.execute(
            guarded(Chunk).where(Chunk.id == chunk_id, Chunk.state.in_(CHUNK_LISTED))
            .values(state=ChunkState.FAILED if failed else ChunkState.DONE, updated_at=self.now(),
                    error=f"{failed} file(s) failed" if failed else None)
            .returning(Chunk.job_id))
        job_id = result.scalar_one_or_none()
        if job_id is not None:
            await self._refresh_job(s, job_id)

    async def _refresh_job(self, s: AsyncSession, job_id: str) -> None:
        """Finish a running, fully planned job once none of its chunks is open (the job row
        is locked first, for the same reason as in ``_refresh_chunk``). Costs one pass over
        the job's chunks, never over its files."""
        job = (await s.execute(select(Job.state, Job.plan_done, Job.follow)
                               .where(Job.id == job_id).with_for_update())).one_or_none()
        if job is None or job.state != JobState.RUNNING or not job.plan_done or job.follow:
            return
        rows = await s.execute(
            select(Chunk.state, func.count(), func.sum(Chunk.files_failed),
                   func.sum(Chunk.files_done))
            .where(Chunk.job_id == job_id).group_by(Chunk.state))
        counts, failed_files, done_files = {}, 0, 0
        for state, n, failed, done in rows.all():
            counts[state] = n
            failed_files += int(failed or 0)
            done_files += int(done or 0)
        if any(counts.get(state) for state in CHUNK_OPEN):
            return
        if not counts.get(ChunkState.FAILED) and not failed_files:
            final = JobState.SUCCEEDED
        else:
            final = (JobState.COMPLETED_WITH_ERRORS if counts.get(ChunkState.DONE) or done_files
                     else JobState.FAILED)
        now = self.now()
        await s.execute(guarded(Job).where(Job.id == job_id, Job.state == JobState.RUNNING)
                        .values(state=final, finished_at=now, updated_at=now))


@asynccontextmanager
async def _held(lock: asyncio.Lock | None) -> AsyncIterator[None]:
    if lock is None:
        yield
        return
    async with lock:
        yield


def aware(value: datetime, name: str) -> datetime:
    """Refuse naive datetimes with a clear message (all times are timezone-aware UTC)."""
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValueError(f"{name} must be a timezone-aware datetime (UTC), got {value!r}")
    return value


def lease_until(now: datetime, seconds: float) -> datetime:
    """Expiry of a lease taken at ``now`` for ``seconds``."""
    if seconds <= 0:
        raise ValueError(f"lease_seconds must be positive, got {seconds}")
    return now + timedelta(seconds=seconds)
