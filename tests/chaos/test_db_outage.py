"""A database outage in the middle of a download never stalls the job: outcomes that could not
be recorded are held and written when the database returns, no lease is renewed for a file
nobody works on, and the job finishes without a restart (SQLite and Postgres).

The outage is real (see outage.py: another process holding SQLite's write lock beyond the
busy timeout; the Postgres connections cut and refused) and the test checks that it bit (the
worker's heartbeat failed). On the code before the hold and hand-back (commit 290e167's
parent) both cases stall as issue 11 describes: files left ``downloading`` by a worker that
no longer works on them, their leases renewed by its heartbeat, until the timeout.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from jsocsim import run_emulator
from service.db.repo import Repo
from tests.chaos.outage import DatabaseOutage, database_outage
from tests.service.jobs_harness import (
    EMAIL,
    Running,
    check_files_match_manifest,
    describe,
    final_state,
    job_spec,
    make_settings,
    no_politeness_violations,
    wait_for,
)

OUTAGE_SECONDS = 4.0  # longer than a lease: the worker's own leases run out meanwhile
LEASE_SECONDS = 2.0


async def files_done(repo: Repo, job_id: str) -> int:
    return sum(f.state == "done" for f in await repo.list_files(job_id))


async def test_job_finishes_after_a_database_outage(db_url: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="service")
    async with database_outage(db_url, monkeypatch) as outage:
        await _outage_during_job(outage, tmp_path)
    assert any("heartbeat of worker w1 failed" in r.getMessage() for r in caplog.records), \
        "the outage did not bite: no heartbeat failed"


async def _outage_during_job(outage: DatabaseOutage, tmp_path: Path) -> None:
    async with run_emulator(tmp_path / "jsoc", emails=[EMAIL], staging_delay=0.02,
                            file_size=6000, latency=0.25) as emu:
        settings = make_settings(tmp_path, emu.base_url, outage.url, max_chunk_records=12,
                                 lease_seconds=LEASE_SECONDS, heartbeat_seconds=0.3)
        repo = Repo.from_url(outage.url)
        running: Running | None = None
        try:
            job, _ = await repo.create_job(job_spec(24), notify_email=EMAIL)
            running = Running(settings, repo)
            await wait_for(lambda: _at_least(repo, job.id, 2), 30, "the first files")
            await outage.begin()
            await asyncio.sleep(OUTAGE_SECONDS)
            await outage.end()
            try:
                await wait_for(lambda: final_state(repo, job.id), 40, "the job to finish")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; {await describe(repo, job.id)}") from None
            files = await repo.list_files(job.id)
            assert (await repo.get_job(job.id)).state == "succeeded", await describe(
                repo, job.id)
            assert len(files) == 24 and {f.state for f in files} == {"done"}
            check_files_match_manifest(emu, settings.download_dir, files)
            no_politeness_violations(emu)
        finally:
            if running is not None:
                await running.stop()
            await repo.close()


async def _at_least(repo: Repo, job_id: str, n: int) -> Any:
    return await files_done(repo, job_id) >= n
