"""The job-level figures of /metrics, read from the database (SQLite and Postgres): files by
state from the chunk counters, exports, queue depth, politeness and mirror lag."""

from __future__ import annotations

from service.db import UNFENCED
from service.db.repo import Repo
from service.db.repo_files import FileOutcome
from service.ops.db_metrics import database_families
from service.settings import Settings
from service.timeutil import format_tai, parse_time
from tests.service.rows import job_with_chunks, ready_export

HOST = "127.0.0.1:9"


def samples(families: list) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in families for s in family.samples}


async def test_database_figures(repo: Repo) -> None:
    job = await job_with_chunks(repo, 2)
    await ready_export(repo, job, ["a", "b", "c"], host=HOST)  # chunk 0: 3 files listed
    claim = await repo.claim_chunk_to_export("w0", max_pending_per_email=1)
    assert claim is not None  # chunk 1's export is now pending at JSOC
    batch = await repo.claim_file_batch("w0", HOST, lane="w0#1", max_files=2)
    assert len(batch) == 2
    first = batch[0]
    assert await repo.record_file_outcomes([FileOutcome(
        first.file_id, "done", first.lease_token, sha256="0" * 64, size=100)]) == [True]
    mirror, _ = await repo.create_job({"series": "hmi.M_45s"}, notify_email="a@example.org",
                                      follow=True)
    covered = "2014.01.01_00:00:00_TAI"
    newest = format_tai(parse_time(covered) + 3600)
    assert await repo.advance_plan(mirror.id, planned_until=covered, next_seq=0,
                                   plan_done=False, jsoc_until=newest, lease_token=UNFENCED)
    await repo.heartbeat("w0", hostname="node", pid=1, holding={})

    got = samples(await database_families(repo, Settings(max_pending_exports_per_email=2)))
    for state, n in {"pending": 1, "downloading": 1, "done": 1, "failed": 0}.items():
        assert got[("jsoc_bulk_job_files", (("job_id", job), ("state", state)))] == n, state
    assert got[("jsoc_bulk_job_bytes_done", (("job_id", job),))] == 100
    assert got[("jsoc_bulk_job_bytes_expected", (("job_id", job),))] == 300
    assert got[("jsoc_bulk_jobs", (("state", "running"),))] == 1
    assert got[("jsoc_bulk_jobs", (("state", "queued"),))] == 1  # the mirror
    assert got[("jsoc_bulk_exports", (("state", "ready"),))] == 1
    assert got[("jsoc_bulk_pending_exports", (("email", "a@example.org"),))] == 1
    assert got[("jsoc_bulk_pending_exports_limit", ())] == 2
    assert got[("jsoc_bulk_active_connections", (("host", HOST),))] == 1  # one lane
    assert got[("jsoc_bulk_connection_limit", (("host", HOST),))] == 4  # not JSOC's host
    assert got[("jsoc_bulk_queue_depth", (("stage", "plan"),))] == 1
    assert got[("jsoc_bulk_queue_depth", (("stage", "export"),))] == 0
    assert got[("jsoc_bulk_queue_depth", (("stage", "download"),))] == 1
    assert got[("jsoc_bulk_mirror_behind_seconds", (("job_id", mirror.id),))] == 3600
    assert got[("jsoc_bulk_worker_heartbeat_age_seconds", (("worker", "w0"),))] >= 0
