"""The worker end to end in-process: real emulator over HTTP on 127.0.0.1, real SQLite and
Postgres, real files on disk. Each test is small (a few files, fast polls)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from jsocsim import run_emulator
from service.db.models import JOB_FINAL
from service.db.repo import Repo
from service.jsoc.client import JsocClient
from service.settings import Settings, load_settings
from service.timeutil import format_tai, parse_time
from service.worker import Worker

EMAIL = "a@b.org"
SERIES = "hmi.M_45s"  # one record per 45 s slot (CAMERA 2)
STEP = 45.0
START = "2014.01.01_00:00:00_TAI"


def job_spec(slots: int, **extra: Any) -> dict[str, Any]:
    """A job over ``slots`` slots of hmi.M_45s, magnetogram only (``end`` is the last slot:
    both ends are included, as in sunpy's a.Time)."""
    end_tai = parse_time(START) + (slots - 1) * STEP
    return {"series": SERIES, "start": START, "end": format_tai(end_tai),
            "segments": ["magnetogram"], **extra}


def make_settings(tmp_path: Path, base_url: str, db_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = dict(
        jsoc_url=base_url, email=EMAIL, data_dir=tmp_path / "data", database_url=db_url,
        poll_min=0.02, poll_max=0.1, retry_base=0.01, retry_cap=0.05, lease_seconds=5.0,
        heartbeat_seconds=0.5, shutdown_grace_seconds=2.0, max_chunk_records=2)
    values.update(overrides)
    return load_settings(**values)


async def wait_for(check: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    """Poll an async condition until truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Running:
    """A Worker running as a task; ``await stop()`` sets its stop event and waits."""

    def __init__(self, settings: Settings, repo: Repo, worker_id: str = "w1") -> None:
        self.stop_event = asyncio.Event()
        self.worker = Worker(settings, repo, worker_id=worker_id)
        self.task = asyncio.create_task(self.worker.run(self.stop_event))

    async def stop(self, timeout: float = 15.0) -> None:
        self.stop_event.set()
        await asyncio.wait_for(self.task, timeout)


async def run_job_to_end(settings: Settings, repo: Repo, spec: dict[str, Any],
                         timeout: float = 30.0) -> str:
    job, _ = await repo.create_job(spec, notify_email=EMAIL)
    await finish_with_worker(settings, repo, job.id, timeout=timeout)
    return job.id


async def finish_with_worker(settings: Settings, repo: Repo, job_id: str, *,
                             worker_id: str = "w1", timeout: float = 30.0) -> None:
    """Run a worker until the job reaches a final state (its rows in the failure message)."""
    running = Running(settings, repo, worker_id=worker_id)
    try:
        await wait_for(lambda: final_state(repo, job_id), timeout, f"job {job_id} to finish")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; {await describe(repo, job_id)}") from None
    finally:
        await running.stop()


async def describe(repo: Repo, job_id: str) -> str:
    """The job's rows, for a failure message."""
    files = [(f.id, f.state, f.host, f.lease_owner, f.attempts, f.error, f.next_attempt_at)
             for f in await repo.list_files(job_id)]
    chunks = [(c.id, c.state, c.lease_owner) for c in await repo.list_chunks(job_id)]
    exports = [(e.id, e.state, e.request_id) for e in await repo.list_exports(job_id)]
    return f"chunks={chunks} exports={exports} files={files}"


async def final_state(repo: Repo, job_id: str) -> str | None:
    job = await repo.get_job(job_id)
    assert job is not None
    return job.state if job.state in JOB_FINAL else None


def url_path(url: str) -> str:
    return "/" + url.split("/", 3)[3]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_files_match_manifest(emu: Any, root: Path, files: list[Any]) -> None:
    """Every done file is on disk at its dest_path with the size and sha256 JSOC served."""
    manifest = emu.manifest()
    for f in files:
        path = root / f.dest_path
        served = manifest[url_path(f.url)]
        assert path.stat().st_size == served["size"] == f.bytes_done
        assert sha256(path) == served["sha256"] == f.sha256
        assert not Path(str(path) + ".part").exists()


def no_politeness_violations(emu: Any) -> None:
    stats = emu.stats()
    assert stats["violations"] == 0, stats
    for client in stats["clients"].values():
        assert client["peak_concurrent_downloads"] <= 1
        assert client["refused_connections"] == 0
    for email in stats["emails"].values():
        assert email["peak_pending_exports"] <= 1


@pytest.fixture
async def emu(tmp_path: Path) -> AsyncIterator[Any]:
    async with run_emulator(tmp_path / "jsoc", emails=[EMAIL], staging_delay=0.05,
                            file_size=8000) as emulator:
        yield emulator


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
    await repo.advance_plan(job.id, planned_until="end", next_seq=1, plan_done=True)
    await repo.start_job(job.id)
    dead = await repo.claim_chunk_to_export("dead", lease_seconds=60)
    assert dead is not None
    async with run_emulator(tmp_path / "jsoc", emails=[EMAIL], staging_delay=30) as emu:
        async with JsocClient(emu.base_url) as jsoc:  # what the dead worker sent
            meta = await jsoc.series_struct(SERIES)
            sent = await jsoc.exp_request(dead.recordset, EMAIL, method="url", protocol="fits",
                                          filenamefmt=meta.export_filenamefmt())
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
