"""The states of jobs, chunks, exports and files (docs/architecture.md §3), and the named sets
of them used in queries.

Each state is a ``StrEnum``: a member *is* its string (``JobState.RUNNING == "running"``), so the
database keeps plain strings (CHECK constraints list them), JSON carries the same strings, and
the API's OpenAPI document lists the allowed values. Tar rows (``service/db/tar_rows.py``) are
file rows and use the file states.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    """A job (one user query)."""

    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    COMPLETED_WITH_ERRORS = "completed_with_errors"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ChunkState(StrEnum):
    """A chunk (a time slice of a job, exported as one JSOC request)."""

    PLANNED = "planned"
    EXPORTING = "exporting"
    READY = "ready"
    DOWNLOADING = "downloading"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SPLIT = "split"


class ExportState(StrEnum):
    """An export (one JSOC export request of a chunk)."""

    RESERVING = "reserving"
    SUBMITTED = "submitted"
    POLLING = "polling"
    READY = "ready"
    EXPIRED = "expired"
    ERROR = "error"


class FileState(StrEnum):
    """A file of a job (also a url-tar export's tar row and member rows)."""

    PENDING = "pending"
    DOWNLOADING = "downloading"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"


# every state, in the order the API and the dashboard list them
JOB_STATES = tuple(JobState)
CHUNK_STATES = tuple(ChunkState)
EXPORT_STATES = tuple(ExportState)
FILE_STATES = tuple(FileState)

# jobs: still to be worked on (may be paused) / finished
JOB_ACTIVE = (JobState.QUEUED, JobState.RUNNING, JobState.PAUSED)
JOB_FINAL = (JobState.SUCCEEDED, JobState.COMPLETED_WITH_ERRORS, JobState.FAILED,
             JobState.CANCELLED)
# jobs active and not paused (the planner takes these; a pause applies to these)
JOB_UNPAUSED = (JobState.QUEUED, JobState.RUNNING)
# jobs a retry may restart
JOB_RETRYABLE = (JobState.FAILED, JobState.COMPLETED_WITH_ERRORS)

# chunks: not finished / open with files not listed yet / open with files listed
CHUNK_OPEN = (ChunkState.PLANNED, ChunkState.EXPORTING, ChunkState.READY,
              ChunkState.DOWNLOADING)
CHUNK_UNLISTED = (ChunkState.PLANNED, ChunkState.EXPORTING)
CHUNK_LISTED = (ChunkState.READY, ChunkState.DOWNLOADING)

# exports: counting against the per-email limit / waiting for a status poll
EXPORT_PENDING = (ExportState.RESERVING, ExportState.SUBMITTED, ExportState.POLLING)
EXPORT_POLLED = (ExportState.SUBMITTED, ExportState.POLLING)
# exports whose files are gone once JSOC says the request expired
EXPORT_EXPIRABLE = (ExportState.SUBMITTED, ExportState.POLLING, ExportState.READY)

# files: not finished (counted in a chunk's ``files_open``)
FILE_OPEN = (FileState.PENDING, FileState.DOWNLOADING)


class ConditionKind(StrEnum):
    """A worker-wide condition a live worker reports in its heartbeat."""

    DISK_FULL = "disk_full"
