"""Rows to start repository tests from: planned jobs with chunks, listed files, a ready export,
and a settable clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from service.db import UNFENCED
from service.db.repo import Repo

FILE_HOST = "127.0.0.1:9"  # the host file_specs() puts in file URLs (nothing listens there)


class Clock:
    """A settable clock: ``clock()`` returns the current fake UTC time."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


async def job_with_chunks(repo: Repo, n_chunks: int, *, email: str = "a@example.org",
                          priority: int = 0, start: bool = True, **job_kw: Any) -> str:
    """A fully planned job with ``n_chunks`` chunks (seq 0…n-1), running unless start=False."""
    job, _ = await repo.create_job({"series": "hmi.M_45s"}, notify_email=email,
                                   priority=priority, **job_kw)
    await repo.add_chunks(job.id, [{"seq": i, "recordset": f"hmi.M_45s[{i}]",
                                    "est_bytes": 1000 * (i + 1)} for i in range(n_chunks)])
    assert await repo.advance_plan(job.id, planned_until="end", next_seq=n_chunks,
                                   plan_done=True, lease_token=UNFENCED)
    if start:
        await repo.start_job(job.id)
    return job.id


def file_specs(names: list[str], *, host: str = FILE_HOST, dest: str = "job",
               size: int = 100) -> list[dict[str, Any]]:
    """Listed-file dicts as the poll stage would pass them to record_export_ready."""
    return [{"record": f"hmi.M_45s[{name}]", "segment": "magnetogram", "file_key": f"k:{name}",
             "url": f"http://{host}/SUM1/{name}.fits", "dest_path": f"{dest}/{name}.fits",
             "size_expected": size} for name in names]


async def ready_export(repo: Repo, job_id: str, names: list[str], *, worker: str = "w0",
                       **file_kw: Any) -> tuple[int, int]:
    """Claim the job's next chunk, submit, and mark its export ready with files ``names``.

    Returns (export_id, chunk_id)."""
    claim = await repo.claim_chunk_to_export(worker, max_pending_per_email=100)
    assert claim is not None and claim.job_id == job_id
    assert await repo.record_export_submitted(claim.export_id, request_id="JSOC_1",
                                              status=2, wait=0, lease_token=claim.lease_token)
    todo = await repo.record_export_ready(claim.export_id, files=file_specs(names, **file_kw),
                                          lease_token=UNFENCED)
    assert todo is not None
    return claim.export_id, claim.chunk_id
