"""Request (query) and response models of the REST API, and converters from database rows."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from service.db.models import File, Job, JobEvent, Worker
from service.db.repo import JobSummary
from service.db.repo_overview import ExportView
from service.db.repo_plan import FollowState
from service.states import (
    CHUNK_STATES,
    EXPORT_STATES,
    FILE_STATES,
    ChunkState,
    ConditionKind,
    ExportState,
    FileState,
    JobState,
)
from service.timeutil import format_tai, parse_time

MAX_PAGE = 500
MAX_OFFSET = 2**31 - 1  # row ids are 32-bit: no page starts further in


class _Query(BaseModel):
    """Query-string parameters: unknown names are refused, strings are converted."""

    model_config = ConfigDict(extra="forbid")


class JobListQuery(_Query):
    state: JobState | None = Field(None, description="Only jobs in this state")
    limit: int = Field(50, ge=1, le=MAX_PAGE, description="Page size")
    offset: int = Field(0, ge=0, le=MAX_OFFSET, description="Jobs to skip (from next_offset)")


class FileListQuery(_Query):
    state: FileState | None = Field(None, description="Only files in this state")
    limit: int = Field(100, ge=1, le=MAX_PAGE, description="Page size")
    offset: int = Field(0, ge=0, le=MAX_OFFSET, description="Files to skip (from next_offset)")
    after_id: int = Field(0, ge=0, le=MAX_OFFSET,
                          description="Only files with a larger id (keyset paging: the last id "
                          "of the previous page; cheaper than offset for big jobs)")


class DeleteQuery(_Query):
    delete_files: bool = Field(False, description="Also delete the job's downloaded files "
                                                  "(only inside the data directory)")


class JobOut(BaseModel):
    """A job as stored."""

    id: str
    state: JobState
    priority: int
    notify_email: str
    follow: bool
    spec: dict[str, Any]
    error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class ExportOut(BaseModel):
    """One JSOC export request of a job, with the chunk (time range) it exports."""

    id: int
    chunk_id: int
    request_id: str | None = Field(description="JSOC's request id (JSOC_...) once submitted")
    state: ExportState
    jsoc_status: int | None = Field(description="JSOC's last status code for the request")
    method: str | None
    protocol: str | None
    polls: int
    error: str | None
    created_at: datetime
    submitted_at: datetime | None
    ready_at: datetime | None
    expires_at: datetime | None
    next_poll_at: datetime | None
    chunk_state: ChunkState
    start_time: str | None = Field(description="Start of the chunk's time range (JSOC time)")
    end_time: str | None
    files_open: int = Field(description="Files of the chunk pending or downloading")
    files_done: int
    files_failed: int
    files_skipped: int
    bytes_done: int
    bytes_expected: int


class EventOut(BaseModel):
    at: datetime
    level: str
    kind: str
    message: str


class WorkerCondition(BaseModel):
    """A worker-wide condition a live worker reports in its heartbeat: it downloads nothing
    until the condition clears (by itself, e.g. once disk space is freed)."""

    worker: str = Field(description="The worker's id (see /workers)")
    condition: ConditionKind = Field(
        description="disk_full: writing under the download directory failed for lack of "
        "space; the worker claims no downloads until space is freed")
    since: str | None = Field(None, description="When the condition began (UTC)")
    error: str | None = Field(None, description="What failed")
    path: str | None = Field(None, description="The directory concerned")


def worker_conditions_out(by_worker: dict[str, dict[str, Any]]) -> list[WorkerCondition]:
    """``Repo.worker_conditions`` as API items, by worker id then condition name."""
    items = []
    for worker, conditions in sorted(by_worker.items()):
        for name, about in sorted(conditions.items()):
            about = about if isinstance(about, dict) else {}
            items.append(WorkerCondition(
                worker=worker, condition=ConditionKind(name), since=_text(about.get("since")),
                error=_text(about.get("error")), path=_text(about.get("path"))))
    return items


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


class JobDetail(JobOut):
    """A job with its progress: counts by state, bytes, rate, ETA and recent errors."""

    chunks: dict[str, int] = Field(description=f"Chunks by state ({', '.join(CHUNK_STATES)})")
    exports: dict[str, int] = Field(description=f"Exports by state ({', '.join(EXPORT_STATES)})")
    files: dict[str, int] = Field(description=f"Files by state ({', '.join(FILE_STATES)})")
    bytes_done: int
    bytes_expected: int = Field(description="Sum of the sizes of the files listed so far")
    est_bytes: int = Field(description="Planner's size estimate of the whole job")
    bytes_total: int = Field(description="Best estimate of the job's total bytes (listed sizes, "
                             "else the mean finished file times the files listed, at least "
                             "the planner's estimate while chunks are unlisted)")
    files_total: int | None = Field(None, description="About how many files the whole job "
                                    "has (listed so far, plus the rest of bytes_total at their "
                                    "mean size); null before any chunk is listed")
    rate_bytes_per_s: float | None = Field(description="Recent download rate")
    eta_seconds: float | None = Field(description="Estimated seconds until all bytes are in")
    recent_errors: list[EventOut]
    conditions: list[WorkerCondition] = Field(
        default_factory=list, description="While the job is queued or running: worker-wide "
        "conditions holding its downloads back now (e.g. disk full on a worker)")
    download_dir: str | None = Field(None, description="Absolute download directory the "
                                     "job's paths are relative to")
    active_exports: list[ExportOut] = Field(
        default_factory=list, description="Exports being staged or polled, and the newest "
        "ready ones (at most a few dozen)")
    recordset: str | None = Field(
        None, description="The record set the job resolved to (start-end, both ends included, "
        "as sunpy and drms write it); null for a mirror")
    covered_until: str | None = Field(
        None, description="Follow jobs: every record before this time (JSOC TAI string) is "
        "downloaded or failed; later ones are being fetched or not planned yet")
    planned_until: str | None = Field(
        None, description="Follow jobs: exports are planned up to this time")
    jsoc_until: str | None = Field(
        None, description="Follow jobs: end of the newest record's slot at JSOC, as of "
        "last_check_at (JSOC's own notion of now)")
    behind_seconds: float | None = Field(
        None, description="Follow jobs: jsoc_until minus covered_until, at least 0 (a caught "
        "up mirror stays about its lag behind)")
    next_check_at: datetime | None = Field(
        None, description="Follow jobs: when JSOC is next asked for new and late records")
    last_check_at: datetime | None = Field(
        None, description="Follow jobs: when JSOC was last asked")


class PreviewOut(BaseModel):
    """What a job spec selects at JSOC, from rs_summary and rs_list (nothing is stored)."""

    recordset: str | None = Field(description="The job's record set, as sunpy and drms write "
                                  "it: start-end with both ends included")
    records: int = Field(description="Records JSOC has for it (0: the job would select "
                         "nothing and is refused on submit)")
    est_bytes: int = Field(description="Estimated bytes: mean *size* of a few records times "
                           "records")
    exports: int = Field(description="Exports the range is cut into (about; from the mean "
                         "density and the chunk limits)")
    first_record: str | None
    last_record: str | None
    export_recordsets: list[str] = Field(description="Record sets of the first exports")
    message: str = Field(description="One line for people, e.g. '0 records: …'")


class MirrorStatus(BaseModel):
    """The follow fields of a job's detail (see JobDetail)."""

    covered_until: str | None
    planned_until: str | None
    jsoc_until: str | None
    behind_seconds: float | None
    next_check_at: datetime | None
    last_check_at: datetime | None


class JobPage(BaseModel):
    items: list[JobOut]
    limit: int
    offset: int
    next_offset: int | None = Field(description="Offset of the next page; null on the last")


class FileOut(BaseModel):
    id: int
    chunk_id: int
    record: str
    segment: str | None
    url: str
    dest_path: str = Field(description="Path relative to the download directory")
    path: str | None = Field(None, description="Absolute path of the file on the API's host")
    state: FileState
    size_expected: int | None
    bytes_done: int
    sha256: str | None
    attempts: int
    error: str | None
    updated_at: datetime


class FilePage(BaseModel):
    items: list[FileOut]
    limit: int
    offset: int
    next_offset: int | None


class DeleteResult(BaseModel):
    id: str
    deleted: bool
    files_deleted: int = Field(description="Files removed from disk (0 unless delete_files)")
    files_kept: list[str] = Field(description="Paths left on disk (shared or outside the root)")


class WorkerOut(BaseModel):
    id: str
    hostname: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None
    alive: bool = Field(description="Heartbeat recent and not stopped")
    holding: dict[str, Any] | None = Field(description="What the worker holds (leases)")


class WorkerList(BaseModel):
    items: list[WorkerOut]


class OpenApiDocument(BaseModel):
    """The OpenAPI 3.1 document of this API."""

    model_config = ConfigDict(extra="allow")
    openapi: str


def job_out(job: Job) -> JobOut:
    return JobOut(id=job.id, state=job.state, priority=job.priority,
                  notify_email=job.notify_email, follow=bool(job.follow), spec=job.spec,
                  error=job.error, created_at=job.created_at, updated_at=job.updated_at,
                  finished_at=job.finished_at)


def _all_states(counts: dict[str, int], states: tuple[str, ...]) -> dict[str, int]:
    return {state: int(counts.get(state, 0)) for state in states}


def mirror_status(state: FollowState) -> MirrorStatus:
    """A follow job's progress: covered = the planned cursor, or the start of the earliest
    open chunk if that is before it; behind = JSOC's newest data minus covered."""
    covered = state.planned_until
    starts = [parse_time(t) for t in state.open_starts]
    if starts and (covered is None or min(starts) < parse_time(covered)):
        covered = format_tai(min(starts))
    behind = None
    if state.jsoc_until is not None and covered is not None:
        behind = max(0.0, parse_time(state.jsoc_until) - parse_time(covered))
    return MirrorStatus(covered_until=covered, planned_until=state.planned_until,
                        jsoc_until=state.jsoc_until, behind_seconds=behind,
                        next_check_at=state.next_check_at, last_check_at=state.last_check_at)


def job_detail(summary: JobSummary, rate: float | None, eta: float | None,
               bytes_total: int, mirror: MirrorStatus | None = None) -> JobDetail:
    events = [EventOut(at=e.at, level=e.level, kind=e.kind, message=e.message)
              for e in summary.recent_events if event_is_error(e)]
    return JobDetail(
        **job_out(summary.job).model_dump(),
        chunks=_all_states(summary.chunks, CHUNK_STATES),
        exports=_all_states(summary.exports, EXPORT_STATES),
        files=_all_states(summary.files, FILE_STATES),
        bytes_done=summary.bytes_done, bytes_expected=summary.bytes_expected,
        est_bytes=summary.est_bytes, bytes_total=bytes_total, rate_bytes_per_s=rate,
        eta_seconds=eta,
        recent_errors=events,
        **(mirror.model_dump() if mirror is not None else {}),
    )


def export_out(view: ExportView) -> ExportOut:
    e, c = view.export, view.chunk
    return ExportOut(
        id=e.id, chunk_id=e.chunk_id, request_id=e.request_id, state=e.state,
        jsoc_status=e.jsoc_status, method=e.method, protocol=e.protocol, polls=e.polls,
        error=e.error, created_at=e.created_at, submitted_at=e.submitted_at,
        ready_at=e.ready_at, expires_at=e.expires_at, next_poll_at=e.next_poll_at,
        chunk_state=c.state, start_time=c.start_time, end_time=c.end_time,
        files_open=c.files_open, files_done=c.files_done, files_failed=c.files_failed,
        files_skipped=c.files_skipped, bytes_done=c.bytes_done, bytes_expected=c.bytes_expected)


def file_out(f: File, root: Path | None = None) -> FileOut:
    path = str(root.resolve() / f.dest_path) if root is not None else None
    return FileOut(id=f.id, chunk_id=f.chunk_id, record=f.record, segment=f.segment, url=f.url,
                   dest_path=f.dest_path, path=path, state=f.state,
                   size_expected=f.size_expected, bytes_done=f.bytes_done, sha256=f.sha256,
                   attempts=f.attempts, error=f.error, updated_at=f.updated_at)


def worker_out(w: Worker, now: datetime, stale_after: float) -> WorkerOut:
    alive = w.stopped_at is None and (now - w.heartbeat_at).total_seconds() <= stale_after
    return WorkerOut(id=w.id, hostname=w.hostname, pid=w.pid, started_at=w.started_at,
                     heartbeat_at=w.heartbeat_at, stopped_at=w.stopped_at, alive=alive,
                     holding=w.holding)


def event_is_error(event: JobEvent) -> bool:
    return event.level in ("error", "warning")
