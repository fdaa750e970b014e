"""Fair scheduling end to end: work is handed out by priority, then round-robin across jobs, so
a big mirror cannot starve a small job submitted after it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from jsocsim import run_emulator
from service.api.schemas import mirror_status
from service.db.repo import Repo
from service.timeutil import format_tai, parse_time
from tests.service.jobs_harness import EMAIL, Running, final_state, make_settings, wait_for

SERIES, STEP = "hmi.M_45s", 45.0
MIRROR = {"series": SERIES, "start": "2014.01.01_00:00:00_TAI", "follow": True,
          "check_interval": "1s", "segments": ["magnetogram"]}  # a day to backfill: 1920 slots


def small_spec(start: str, slots: int) -> dict[str, Any]:
    end = format_tai(parse_time(start) + (slots - 1) * STEP)  # the last slot: ends included
    return {"series": SERIES, "start": start, "end": end, "segments": ["magnetogram"]}


@pytest.fixture
async def busy_mirror(tmp_path: Path, repo: Repo, db_url: str) -> AsyncIterator[str]:
    """A worker busy with a mirror that has a day of 45 s data to backfill, 2 records per
    export; yields the mirror's job id once it has downloaded a few files."""
    async with run_emulator(tmp_path / "jsoc", emails=[EMAIL], staging_delay=0.02,
                            file_size=2000, clock_start="2014.01.02_00:00:00_TAI") as emu:
        settings = make_settings(tmp_path, emu.base_url, db_url, max_chunk_records=2)
        mirror, _ = await repo.create_job(MIRROR, notify_email=EMAIL, follow=True)
        running = Running(settings, repo)
        try:
            await wait_for(lambda: _done_files(repo, mirror.id, 4), 20, "the mirror to start")
            yield mirror.id
        finally:
            await running.stop()


async def _done_files(repo: Repo, job_id: str, at_least: int) -> bool:
    return len(await repo.list_files(job_id, state="done", limit=at_least)) >= at_least


async def _exports_between(repo: Repo, mirror_id: str, job_id: str) -> tuple[int, int]:
    """(the job's exports, mirror exports reserved between the job's first and last)."""
    mine = sorted(e.created_at for e in await repo.list_exports(job_id))
    theirs = [e.created_at for e in await repo.list_exports(mirror_id)]
    return len(mine), sum(1 for t in theirs if mine[0] < t < mine[-1])


async def _mirror_far_behind(repo: Repo, mirror_id: str) -> None:
    job = await repo.get_job(mirror_id)
    status = mirror_status(await repo.follow_state(mirror_id))
    assert job.state == "running"
    assert status.behind_seconds is not None and status.behind_seconds > 12 * 3600


async def test_small_job_finishes_while_a_big_mirror_runs(busy_mirror: str,
                                                          repo: Repo) -> None:
    small, _ = await repo.create_job(small_spec("2013.12.31_00:00:00_TAI", 4),
                                     notify_email=EMAIL)  # same priority, 2 exports
    assert await wait_for(lambda: final_state(repo, small.id), 20,
                          "the small job") == "succeeded"
    assert len(await repo.list_files(small.id, state="done")) == 4
    await _mirror_far_behind(repo, busy_mirror)
    exports, interleaved = await _exports_between(repo, busy_mirror, small.id)
    assert exports == 2 and interleaved <= 1  # round robin: turns alternate


async def test_higher_priority_job_goes_first(busy_mirror: str, repo: Repo) -> None:
    urgent, _ = await repo.create_job({**small_spec("2013.12.30_00:00:00_TAI", 4),
                                       "priority": 5}, notify_email=EMAIL, priority=5)
    assert await wait_for(lambda: final_state(repo, urgent.id), 20,
                          "the urgent job") == "succeeded"
    await _mirror_far_behind(repo, busy_mirror)
    exports, interleaved = await _exports_between(repo, busy_mirror, urgent.id)
    assert exports == 2 and interleaved == 0  # no mirror export while it had work
