"""SQLAlchemy 2 ORM models: the persistent state of the download service.

States (docs/architecture.md §3; the enums and their named sets are in ``service/states.py``):

* job:    queued → running → succeeded | completed_with_errors | failed | cancelled (+ paused)
* chunk:  planned → exporting → ready → downloading → done | failed | cancelled | split
* export: reserving → submitted → polling → ready | expired | error
* file:   pending → downloading → done | failed | skipped

Leases (owner, expiry, fencing token; docs/architecture.md §4.2) live on the row being worked
on: the job while it is being planned, the chunk while its export is being submitted, the export
while it is polled and the file while it downloads. Every claim increments the token; updates
carry the token they were given and are refused once another worker has taken the row over.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from service.safetext import clean_text
from service.states import (  # the sets re-exported for old importers (tests)
    CHUNK_OPEN,  # noqa: F401
    CHUNK_STATES,
    EXPORT_PENDING,  # noqa: F401
    EXPORT_STATES,
    FILE_STATES,
    JOB_ACTIVE,  # noqa: F401
    JOB_FINAL,  # noqa: F401
    JOB_STATES,
    ChunkState,
    ExportState,
    FileState,
    JobState,
)

LOCAL_HOST = "local"  # host of files copied from an already stored file instead of fetched

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """The current time as a timezone-aware UTC datetime."""
    return datetime.now(UTC)


def new_job_id() -> str:
    """A short random job id (16 hex digits)."""
    return uuid.uuid4().hex[:16]


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on every backend (SQLite stores naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware (UTC) datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class MessageText(TypeDecorator[str]):
    """Error and event text: stored cleaned (``safetext.clean_text``: no NUL, valid UTF-8),
    whatever it quotes, so recording a failure can never fail itself."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else clean_text(str(value))


S = TypeVar("S", bound=StrEnum)


class StateColumn(TypeDecorator[S]):
    """A state column: a string in the database, its ``StrEnum`` member in Python."""

    impl = String
    cache_ok = True

    def __init__(self, enum: type[S], length: int) -> None:
        super().__init__(length)
        self.enum = enum

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else str.__str__(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> S | None:
        return None if value is None else self.enum(value)


def _states_check(name: str, states: tuple[str, ...]) -> CheckConstraint:
    allowed = ", ".join(f"'{s}'" for s in states)
    return CheckConstraint(f"state IN ({allowed})", name=name)


class Base(DeclarativeBase):
    """Declarative base with a constraint naming convention (stable names for migrations)."""

    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {  # noqa: RUF012
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        str: String(255),
    }


class LeaseMixin:
    """Lease columns: who works on the row, until when, and the fencing token."""

    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None]
    lease_token: Mapped[int] = mapped_column(Integer, default=0)


class Job(Base):
    """One user query: the spec, its state, the planning cursor and follow-mode fields."""

    __tablename__ = "jobs"
    __table_args__ = (_states_check("state", JOB_STATES), Index(None, "state", "priority"))

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_job_id)
    spec: Mapped[dict[str, Any]]
    state: Mapped[JobState] = mapped_column(StateColumn(JobState, 24), default=JobState.QUEUED)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    notify_email: Mapped[str] = mapped_column(String(320))
    idempotency_key: Mapped[str | None] = mapped_column(unique=True)
    error: Mapped[str | None] = mapped_column(MessageText)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    # lazy planning: chunks up to planned_until exist; next_seq is the next planner seq
    planned_until: Mapped[str | None] = mapped_column(String(64))
    next_seq: Mapped[int] = mapped_column(Integer, default=0)
    plan_done: Mapped[bool] = mapped_column(default=False)
    plan_lease_owner: Mapped[str | None] = mapped_column(String(64))
    plan_lease_expires_at: Mapped[datetime | None]
    plan_lease_token: Mapped[int] = mapped_column(Integer, default=0)
    # round-robin fairness between jobs of equal priority
    last_served_at: Mapped[datetime | None]
    files_served_at: Mapped[datetime | None]
    # follow mode (mirroring a series as new data arrive)
    follow: Mapped[bool] = mapped_column(default=False)
    covered_until: Mapped[str | None] = mapped_column(String(64))  # end of what is planned
    next_check_at: Mapped[datetime | None]
    jsoc_until: Mapped[str | None] = mapped_column(String(64))  # end of JSOC's newest slot
    settled_until: Mapped[str | None] = mapped_column(String(64))  # no re-check needed before
    last_check_at: Mapped[datetime | None]


class Chunk(LeaseMixin, Base):
    """A time slice of a job, exported as one JSOC request (split in two on status 3)."""

    __tablename__ = "chunks"
    __table_args__ = (
        _states_check("state", CHUNK_STATES),
        UniqueConstraint("job_id", "seq", "part"),
        Index(None, "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    part: Mapped[str] = mapped_column(String(64), default="")  # "" planned, "0"/"1" split halves
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("chunks.id", ondelete="CASCADE"))
    recordset: Mapped[str] = mapped_column(Text)
    start_time: Mapped[str | None] = mapped_column(String(64))
    end_time: Mapped[str | None] = mapped_column(String(64))
    est_records: Mapped[int | None] = mapped_column(BigInteger)
    est_bytes: Mapped[int | None] = mapped_column(BigInteger)
    state: Mapped[ChunkState] = mapped_column(StateColumn(ChunkState, 16),
                                              default=ChunkState.PLANNED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(MessageText)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    # file counters, kept in the transactions that change file states (see repo_counters)
    files_open: Mapped[int] = mapped_column(BigInteger, default=0)  # pending + downloading
    files_done: Mapped[int] = mapped_column(BigInteger, default=0)
    files_failed: Mapped[int] = mapped_column(BigInteger, default=0)
    files_skipped: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_done: Mapped[int] = mapped_column(BigInteger, default=0)  # of done files
    bytes_expected: Mapped[int] = mapped_column(BigInteger, default=0)  # listed sizes


class Export(LeaseMixin, Base):
    """One JSOC export request for a chunk; the request id is kept while it is valid."""

    __tablename__ = "exports"
    __table_args__ = (
        _states_check("state", EXPORT_STATES),
        Index(None, "notify_email", "state"),
        Index(None, "state", "next_poll_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    chunk_id: Mapped[int] = mapped_column(ForeignKey("chunks.id", ondelete="CASCADE"), index=True)
    request_id: Mapped[str | None] = mapped_column(String(64))
    method: Mapped[str | None] = mapped_column(String(32))
    protocol: Mapped[str | None] = mapped_column(String(128))
    notify_email: Mapped[str] = mapped_column(String(320))
    state: Mapped[ExportState] = mapped_column(StateColumn(ExportState, 16),
                                               default=ExportState.RESERVING)
    jsoc_status: Mapped[int | None] = mapped_column(Integer)
    wait_hint: Mapped[float | None]
    polls: Mapped[int] = mapped_column(Integer, default=0)
    next_poll_at: Mapped[datetime | None]
    submitted_at: Mapped[datetime | None]
    ready_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    index: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(MessageText)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class StagingObservation(Base):
    """How long one staged export took from request to ready, as this service saw it (what
    ``method: auto`` learns url-tar's staging cost from; see ``stages.staging_estimate``).
    Kept apart from ``exports`` so deleting jobs does not forget it; the newest are kept."""

    __tablename__ = "staging_observations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    method: Mapped[str] = mapped_column(String(32))
    protocol: Mapped[str | None] = mapped_column(String(128))
    records: Mapped[int] = mapped_column(BigInteger)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)  # JSOC's size estimate
    seconds: Mapped[float]
    observed_at: Mapped[datetime] = mapped_column(default=utcnow)


class File(LeaseMixin, Base):
    """One file of a job: where it comes from, where it goes, and how far it got."""

    __tablename__ = "files"
    __table_args__ = (
        _states_check("state", FILE_STATES),
        UniqueConstraint("job_id", "file_key"),
        Index(None, "host", "state"),
        Index(None, "chunk_id", "state"),
        Index(None, "job_id", "host", "state", "chunk_id", "id"),
        Index(None, "job_id", "state"),
        Index(None, "file_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    chunk_id: Mapped[int] = mapped_column(ForeignKey("chunks.id", ondelete="CASCADE"))
    export_id: Mapped[int | None] = mapped_column(
        ForeignKey("exports.id", ondelete="SET NULL"), index=True)
    record: Mapped[str] = mapped_column(Text)
    segment: Mapped[str | None] = mapped_column(String(128))
    file_key: Mapped[str] = mapped_column(String(512))  # content identity, dedup across jobs
    url: Mapped[str] = mapped_column(Text)
    host: Mapped[str] = mapped_column(String(255))  # netloc of url, or LOCAL_HOST
    lane: Mapped[str | None] = mapped_column(String(160))  # download lane holding the lease
    source_path: Mapped[str | None] = mapped_column(Text)  # stored copy to link from
    dest_path: Mapped[str] = mapped_column(Text)  # relative to the data root
    size_expected: Mapped[int | None] = mapped_column(BigInteger)
    bytes_done: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str | None] = mapped_column(String(64))
    etag: Mapped[str | None] = mapped_column(String(255))
    last_modified: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[FileState] = mapped_column(StateColumn(FileState, 16),
                                             default=FileState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(MessageText)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class StoredFile(Base):
    """A verified file on disk; a file_key listed here is never fetched again."""

    __tablename__ = "stored_files"
    __table_args__ = (Index(None, "path"),)

    file_key: Mapped[str] = mapped_column(String(512), primary_key=True)
    path: Mapped[str] = mapped_column(Text)  # relative to the data root
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EmailSlot(Base):
    """Lock row per notify email: claims serialise on it (FOR UPDATE) to count pending exports."""

    __tablename__ = "email_slots"

    email: Mapped[str] = mapped_column(String(320), primary_key=True)
    last_claim_at: Mapped[datetime | None]


class HostSlot(Base):
    """Lock row per download host: claims serialise on it to count active connections."""

    __tablename__ = "host_slots"

    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    last_claim_at: Mapped[datetime | None]


class Worker(Base):
    """A worker process, with its heartbeat and a summary of what it holds."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    pid_space: Mapped[str | None] = mapped_column(String(64))  # the pid namespace of `pid`
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
    stopped_at: Mapped[datetime | None]
    holding: Mapped[dict[str, Any] | None]


class JobEvent(Base):
    """Recent notable events (errors, splits, expiries) of a job; bounded per job."""

    __tablename__ = "job_events"
    __table_args__ = (Index(None, "job_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    level: Mapped[str] = mapped_column(String(16), default="error")
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(MessageText)
