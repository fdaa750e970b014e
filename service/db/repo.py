"""``Repo``: every database operation of the service as a named async method.

The methods are grouped in mixins by concern (one module each):

* ``repo_jobs``     create (idempotency key), get/list, summary, cancel/pause/resume/retry/delete
* ``repo_plan``     claim_job_to_plan, add_chunks (insert-or-ignore), advance_plan
* ``repo_exports``  claim_chunk_to_export (per-email limit), record_export_submitted,
                    claim_exports_to_poll, record_poll
* ``repo_outcomes`` record_export_ready (file rows, dedup), mark_export_expired, fail_export,
                    split_chunk
* ``repo_files``    claim_files_to_download (per-host limit), update_file_progress (fenced),
                    finish_file, fail_file, schedule_retry, stored files
* ``repo_staging``  staging_samples (how long staged exports took; written by
                    record_export_ready), add_staging_sample
* ``repo_tars``     the same, extended with the outcomes of url-tar tar rows; tar_members
* ``repo_workers``  heartbeat (lease renewal), list_workers, release_leases
* ``repo_overview`` read-only dashboard views: a job's exports, politeness figures
* ``repo_metrics``  metrics_snapshot (the job-level figures of /metrics)
* ``repo_verified`` done files for manifests, mark_files_bad (a verify found them bad)

Conventions: each call is one short transaction (never network I/O inside); invalid user state
changes raise ``InvalidTransition``; unknown jobs raise ``NotFound``; a worker whose lease was
taken over gets ``False`` (or ``None``) back and must drop the work. Times are timezone-aware
UTC; ``now=`` arguments and the ``clock`` let tests move time without sleeping. Expired leases
are simply claimable again, so no sweeper is needed.
"""

from __future__ import annotations

from service.db.errors import InvalidTransition, LeaseLost, NotFound, RepoError
from service.db.repo_base import (
    UNFENCED,
    ExportClaim,
    FileClaim,
    JobSummary,
    LeaseToken,
    PlanClaim,
    PollClaim,
    StoredChunk,
)
from service.db.repo_exports import ExportsMixin
from service.db.repo_jobs import JobsMixin
from service.db.repo_metrics import MetricsMixin
from service.db.repo_outcomes import OutcomesMixin
from service.db.repo_overview import OverviewMixin
from service.db.repo_plan import PlanMixin
from service.db.repo_staging import StagingMixin, StagingSample
from service.db.repo_tars import TarsMixin
from service.db.repo_verified import VerifiedMixin
from service.db.repo_workers import WorkersMixin


class Repo(OverviewMixin, JobsMixin, PlanMixin, ExportsMixin, OutcomesMixin, TarsMixin,
           WorkersMixin, MetricsMixin, VerifiedMixin, StagingMixin):
    """The service's database API (see the module docstring)."""


__all__ = [
    "UNFENCED",
    "ExportClaim",
    "FileClaim",
    "InvalidTransition",
    "JobSummary",
    "LeaseLost",
    "LeaseToken",
    "NotFound",
    "PlanClaim",
    "PollClaim",
    "Repo",
    "RepoError",
    "StagingSample",
    "StoredChunk",
]
