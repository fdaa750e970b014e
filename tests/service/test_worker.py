"""The worker end to end in-process: real emulator over HTTP on 127.0.0.1, real SQLite and
Postgres, real files on disk. Each test is small (a few files, fast polls)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from jsocsim import run_emulator
from service.db import UNFENCED
from service.db.repo import Repo
from service.jsoc.client import JsocClient
from service.timeutil import format_tai, parse_time
from tests.service.jobs_harness import (
    EMAIL,
    SERIES,
    START,
    STEP,
    Running,
    check_files_match_manifest,
    final_state,
    finish_with_worker,
    job_spec,
    make_settings,
    no_politeness_violations,
    run_job_to_end,
    sha256,
    url_path,
    wait_for,
)

pytestmark = pytest.mark.emulator(emails=[EMAIL], staging_delay=0.05, file_size=8000)


async def test_multi_chunk_job_completes_politely(emu: Any, repo: Repo, db_url: str,
                                                  tmp_path: Path) -> None:
    settings = make_settings(tmp_path, emu.base_url, db_url)
    spec = job_spec(5, path_template="{series}/{T_REC:%Y/%m/%d}/{filename}")
    job_id = await run_job_to_end(settings, repo, spec)
    assert (await repo.get_job(job_id)).state == "succeeded"
    chunks = await repo.list_chunks(job_id)
    assert [c.seq for c in chunks] == [0, 1, 2]  # 5 slots, 2 records per chunk
    assert [c.est_records for c in chunks] == [2, 2, 1]
    files = await repo.list_files(job_id)
    assert len(files) == 5 and {f.state for f in files} == {"done"}
    assert all(f.dest_path.startswith(f"{SERIES}/2014/01/01/") for f in files)
    check_files_match_manifest(emu, settings.download_dir, files)
    no_politeness_violations(emu)


async def test_too_large_chunk_is_split_in_two(tmp_path: Path, repo: Repo, db_url: str) -> None:
    # Each record surveys 12,288,000 bytes (11 MB): 4 records = 46 MB > 30 MB -> status 3;
    # 2 records = 23 MB fit.
    async with run_emulator(tmp_path / "jsoc", emails=[EMAIL], staging_delay=0.05,
                            file_size=4000, max_export_mb=30) as emu:
        settings = make_settings(tmp_path, emu.base_url, db_url, max_chunk_records=4)
        job_id = await run_job_to_end(settings, repo, job_spec(4))
        assert (await repo.get_job(job_id)).state == "succeeded"
        chunks = await repo.list_chunks(job_id)
        parent = next(c for c in chunks if c.part == "")
        halves = sorted((c for c in chunks if c.parent_id == parent.id), key=lambda c: c.part)
        assert parent.state == "split" and "max byte limit of 30MB" in parent.error
        assert [h.state for h in halves] == ["done", "done"]
        # slot-aligned, adjacent, no overlap: the second half starts where the first ends
        assert halves[0].start_time == START
        assert halves[0].end_time == halves[1].start_time == format_tai(parse_time(START)
                                                                        + 2 * STEP)
        files = await repo.list_files(job_id)
        assert len(files) == 4
        check_files_match_manifest(emu, settings.download_dir, files)
        assert emu.stats()["emails"][EMAIL]["exp_requests"] == 3  # refused once, then 2 halves


async def test_unsplittable_chunk_fails_with_jsocs_message(tmp_path: Path, repo: Repo,
                                                           db_url: str) -> None:
    # One record (11 MB) is already over a 10 MB limit: a one-slot chunk cannot be halved.
    async with run_emulator(tmp_path / "jsoc", emails=[EMAIL], staging_delay=0.05,
                            max_export_mb=10) as emu:
        settings = make_settings(tmp_path, emu.base_url, db_url, max_chunk_records=1)
        job_id = await run_job_to_end(settings, repo, job_spec(1))
        job = await repo.get_job(job_id)
        assert job.state == "failed"
        [chunk] = await repo.list_chunks(job_id)
        assert chunk.state == "failed"
        assert "Request exceeds max byte limit of 10MB [status=3]" in chunk.error
        assert "cannot be split" in chunk.error


async def test_failed_export_fails_chunk_with_jsocs_message(tmp_path: Path, repo: Repo,
                                                            db_url: str) -> None:
    async with run_emulator(tmp_path / "jsoc", emails=[EMAIL], staging_delay=0.05,
                            faults={"export_fail_rate": 1.0}) as emu:
        settings = make_settings(tmp_path, emu.base_url, db_url)
        job_id = await run_job_to_end(settings, repo, job_spec(2))
        assert (await repo.get_job(job_id)).state == "failed"
        [chunk] = await repo.list_chunks(job_id)
        [export] = await repo.list_exports(job_id)
        assert chunk.state == "failed" and export.state == "error" and export.jsoc_status == 4
        assert "simulated export_fail_rate fault" in chunk.error and "[status=4]" in chunk.error
        assert emu.stats()["emails"][EMAIL]["exp_requests"] == 1  # no resubmission


def email_stats(emu: Any) -> dict[str, Any]:
    return emu.stats()["emails"].get(EMAIL, {"status7": 0, "exp_requests": 0})


async def stat_reaches(emu: Any, name: str, value: int) -> None:
    async def reached() -> bool:
        return email_stats(emu)[name] >= value
    await wait_for(reached, 10, f"{name} to reach {value}")


async def test_status7_waits_for_the_pending_export_without_a_loop(
        tmp_path: Path, repo: Repo, db_url: str) -> None:
    # Staging takes 30 s of simulated time; the test moves the clock.
    async with run_emulator(tmp_path / "jsoc", emails=[EMAIL], staging_delay=30) as emu:
        # Someone else's export for the same email is pending at JSOC (unknown to the database)
        async with JsocClient(emu.base_url) as jsoc:
            foreign = await jsoc.exp_request(f"{SERIES}[2015.01.01_00:00:00_TAI/90s]", EMAIL)
        settings = make_settings(tmp_path, emu.base_url, db_url)
        job, _ = await repo.create_job(job_spec(2), notify_email=EMAIL)
        running = Running(settings, repo)
        try:
            await stat_reaches(emu, "status7", 1)
            await asyncio.sleep(0.3)  # the worker waits: it must not submit again meanwhile
            assert email_stats(emu)["exp_requests"] == 2
            emu.advance_clock(31)  # the foreign export finishes; the worker submits once more
            await stat_reaches(emu, "exp_requests", 3)
            emu.advance_clock(31)
            await wait_for(lambda: final_state(repo, job.id), 20, "the job to finish")
        finally:
            await running.stop()
        stats = emu.stats()
    assert (await repo.get_job(job.id)).state == "succeeded"
    [export] = await repo.list_exports(job.id)
    assert export.request_id != foreign.request_id  # not adopted: it was not ours
    email = stats["emails"][EMAIL]
    # the foreign request, one refused (status 7) attempt, then exactly one accepted one
    assert email["status7"] == 1 and email["exp_requests"] == 3
    assert stats["exports"][foreign.request_id]["status_polls"] >= 1  # we polled it
    assert email["peak_pending_exports"] == 1


async def test_reservation_of_a_dead_worker_gets_its_pending_export_back(
        tmp_path: Path, repo: Repo, db_url: str) -> None:
    """Crash between exp_request and recording its id: the next worker gets status 7 naming
    that request, waits for it, and its resubmission is answered with the same id by JSOC's
    duplicate rule, so the chunk is staged once."""
    job, _ = await repo.create_job(job_spec(2), notify_email=EMAIL)
    await repo.add_chunks(job.id, [{"seq": 0, "recordset": f"{SERIES}[{START}/90s]{{magnetogram}}",
                                    "start_time": START, "est_records": 2}])
    await repo.advance_plan(job.id, planned_until="end", next_seq=1, plan_done=True,
                            lease_token=UNFENCED)
    await repo.start_job(job.id)
    dead = await repo.claim_chunk_to_export("dead", lease_seconds=60)
    assert dead is not None
    async with run_emulator(tmp_path / "jsoc", emails=[EMAIL], staging_delay=30) as emu:
        async with JsocClient(emu.base_url) as jsoc:  # what the dead worker sent
            meta = await jsoc.series_struct(SERIES)
            sent = await jsoc.exp_request(dead.chunk.recordset, EMAIL, method="url",
                                          protocol="fits", filenamefmt=meta.export_filenamefmt())
        await repo.release_leases("dead")  # its lease ends (as if it expired)
        settings = make_settings(tmp_path, emu.base_url, db_url)
        running = Running(settings, repo)
        try:
            await stat_reaches(emu, "status7", 1)
            emu.advance_clock(31)
            await wait_for(lambda: final_state(repo, job.id), 20, "the job to finish")
        finally:
            await running.stop()
        assert (await repo.get_job(job.id)).state == "succeeded"
        [export] = await repo.list_exports(job.id)
        assert export.request_id == sent.request_id  # the duplicate rule gave it back
        email = emu.stats()["emails"][EMAIL]
        # the dead worker's request, one refused (status 7), one answered as a duplicate
        assert email["exp_requests"] == 3 and email["status7"] == 1
        assert len(emu.stats()["exports"]) == 1  # JSOC staged the chunk once
        check_files_match_manifest(emu, settings.download_dir, await repo.list_files(job.id))


async def test_faults_still_complete_with_verified_files(tmp_path: Path, repo: Repo,
                                                         db_url: str) -> None:
    faults = {"seed": 7, "cgi_error_rate": 0.2, "reset_rate": 0.3, "truncate_rate": 0.3,
              "ignore_range_rate": 0.5}  # files of ~2 MB, so resumed requests carry Range
    async with run_emulator(tmp_path / "jsoc", emails=[EMAIL], staging_delay=0.05,
                            file_size=12_000_000, faults=faults) as emu:
        settings = make_settings(tmp_path, emu.base_url, db_url, retry_max_attempts=30)
        job_id = await run_job_to_end(settings, repo, job_spec(4), timeout=45)
        assert (await repo.get_job(job_id)).state == "succeeded"
        files = await repo.list_files(job_id)
        assert len(files) == 4
        check_files_match_manifest(emu, settings.download_dir, files)
        fired = emu.state.faults.fired
        assert fired["reset"] and fired["truncate"]  # the transfers really were broken
        no_politeness_violations(emu)


async def test_second_job_reuses_stored_files(emu: Any, repo: Repo, db_url: str,
                                              tmp_path: Path) -> None:
    settings = make_settings(tmp_path, emu.base_url, db_url)
    first = await run_job_to_end(settings, repo, job_spec(3))
    served = emu.stats()["bytes_served"]
    second = await run_job_to_end(settings, repo, job_spec(3, path_template="copy/{filename}"))
    assert (await repo.get_job(second)).state == "succeeded"
    assert emu.stats()["bytes_served"] == served  # nothing downloaded again
    old = {f.file_key: f for f in await repo.list_files(first)}
    new = await repo.list_files(second)
    assert len(new) == 3 and {f.file_key for f in new} == set(old)
    root = settings.download_dir
    for f in new:
        assert f.dest_path.startswith("copy/") and f.state == "done"
        assert sha256(root / f.dest_path) == old[f.file_key].sha256 == f.sha256
        assert (root / f.dest_path).stat().st_ino == (root / old[f.file_key].dest_path
                                                      ).stat().st_ino  # hard link


async def test_graceful_stop_then_a_new_worker_finishes(tmp_path: Path, repo: Repo,
                                                        db_url: str) -> None:
    async with run_emulator(tmp_path / "jsoc", emails=[EMAIL], staging_delay=0.05,
                            file_size=100_000) as emu:
        settings = make_settings(tmp_path, emu.base_url, db_url, shutdown_grace_seconds=0)
        job, _ = await repo.create_job(job_spec(6), notify_email=EMAIL)
        running = Running(settings, repo, worker_id="first")

        async def some_done() -> bool:
            return bool(await repo.list_files(job.id, state="done"))
        await wait_for(some_done, 20, "a first file")
        await running.stop()
        assert running.task.done() and running.task.exception() is None
        done_before = {f.url for f in await repo.list_files(job.id, state="done")}
        for rows in (await repo.list_files(job.id), await repo.list_chunks(job.id),
                     await repo.list_exports(job.id)):
            assert all(r.lease_owner is None for r in rows)  # every lease released
        [worker] = await repo.list_workers()
        assert worker.id == "first" and worker.stopped_at is not None

        await finish_with_worker(settings, repo, job.id, worker_id="second")
        assert (await repo.get_job(job.id)).state == "succeeded"
        files = await repo.list_files(job.id)
        assert len(files) == 6
        check_files_match_manifest(emu, settings.download_dir, files)
        requests = emu.stats()["files"]
        assert all(requests[url_path(url)]["requests"] == 1 for url in done_before)
        no_politeness_violations(emu)


async def test_paused_job_is_not_worked_on_until_resumed(emu: Any, repo: Repo, db_url: str,
                                                         tmp_path: Path) -> None:
    job, _ = await repo.create_job(job_spec(2), notify_email=EMAIL)
    await repo.start_job(job.id)
    await repo.pause_job(job.id)
    running = Running(make_settings(tmp_path, emu.base_url, db_url), repo)
    try:
        async def second_heartbeat() -> bool:  # heartbeat_seconds is 0.5
            workers = await repo.list_workers()
            return bool(workers) and workers[0].heartbeat_at > workers[0].started_at
        await wait_for(second_heartbeat, 5, "the worker's second heartbeat")
        [worker] = await repo.list_workers()
        assert worker.id == "w1" and worker.stopped_at is None
        assert set(worker.holding) == {"planning", "submitting", "polling", "downloading"}
        await asyncio.sleep(0.3)  # give the worker a chance to (wrongly) pick the job up
        assert await repo.list_chunks(job.id) == []
        assert emu.stats()["emails"] == {}
        await repo.resume_job(job.id)
        await wait_for(lambda: final_state(repo, job.id), 20, "the job to finish")
    finally:
        await running.stop()
    assert (await repo.get_job(job.id)).state == "succeeded"
