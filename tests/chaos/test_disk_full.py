"""Disk full (a real size-limited tmpfs as the download root): the worker pauses downloads
worker-wide without spending the files' attempts, says so on the job and in its heartbeat,
the served API shows it (``/health`` and ``/ready`` degraded naming the worker, the job's
``conditions``), and the job finishes once space is freed (``retry`` makes waiting files due
at once), after which health is ``ok`` again."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from jsocsim import run_emulator
from service.api.app import running_api
from service.db.repo import Repo
from service.stages.diskspace import free_bytes
from tests.service.jobs_harness import (
    EMAIL,
    Running,
    check_files_match_manifest,
    describe,
    final_state,
    job_spec,
    make_settings,
    wait_for,
)

TMPFS_BYTES = 4 << 20
LEFT_FREE = 40_000  # room for a few files, not for the job


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs (needs root: `mount -t tmpfs`), unmounted afterwards."""
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs",
                           str(mnt)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); run as root")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(disk: Path, leave: int) -> Path:
    filler = disk / "filler.bin"
    with filler.open("wb") as out:
        out.write(b"\0" * max(0, free_bytes(disk) - leave))
    return filler


async def get(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def test_disk_full_pauses_then_resumes(small_disk: Path, repo: Repo, db_url: str,
                                             tmp_path: Path) -> None:
    async with run_emulator(tmp_path / "jsoc", emails=[EMAIL], staging_delay=0.02,
                            file_size=20_000) as emu:
        settings = make_settings(tmp_path, emu.base_url, db_url, max_chunk_records=10,
                                 download_dir=small_disk / "files", retry_max_attempts=2)
        filler = fill(small_disk, LEFT_FREE)
        job, _ = await repo.create_job(job_spec(20), notify_email=EMAIL)
        running = Running(settings, repo)
        try:
            async with running_api(settings, repo, port=0) as base, \
                    aiohttp.ClientSession() as http:
                await _disk_full_then_freed(repo, settings, emu, job.id, filler,
                                            f"{base}api/v1", http)
        finally:
            await running.stop()


async def _disk_full_then_freed(repo: Repo, settings: Any, emu: Any, job_id: str,
                                filler: Path, api: str, http: aiohttp.ClientSession) -> None:
    conditions = await wait_for(lambda: repo.worker_conditions(stale_after=10), 30,
                                "the worker to report the disk full")
    assert "No space left" in conditions["w1"]["disk_full"]["error"]
    await _api_shows_disk_full(api, http, job_id, settings.download_dir)
    summary = await repo.job_summary(job_id)
    assert any(e.kind == "disk_full" for e in summary.recent_events)
    assert summary.job.state == "running"
    files = await repo.list_files(job_id)
    assert not [f for f in files if f.state == "failed"], await describe(repo, job_id)
    filler.unlink()  # space is back
    await repo.retry_job(job_id)
    await wait_for(lambda: final_state(repo, job_id), 40, "the job to finish")
    files = await repo.list_files(job_id)
    assert (await repo.get_job(job_id)).state == "succeeded", await describe(repo, job_id)
    check_files_match_manifest(emu, settings.download_dir, files)

    async def cleared() -> bool:  # the heartbeat after the recovery clears the condition
        return await repo.worker_conditions(stale_after=10) == {}
    await wait_for(cleared, 15, "the disk-full condition to clear")
    health = await get(http, f"{api}/health")
    assert health["status"] == "ok" and health["conditions"] == [], health


async def _api_shows_disk_full(api: str, http: aiohttp.ClientSession, job_id: str,
                               download_dir: Path) -> None:
    """/health and /ready degraded (200) naming the worker; the job's conditions too."""
    for check in ("health", "ready"):
        body = await get(http, f"{api}/{check}")
        assert body["status"] == "degraded" and body["database"] == "ok", body
        [condition] = body["conditions"]
        assert condition["worker"] == "w1" and condition["condition"] == "disk_full"
        assert "No space left" in condition["error"] and condition["since"]
        assert condition["path"] == str(download_dir)
    job = await get(http, f"{api}/jobs/{job_id}")
    assert job["state"] == "running"
    assert [(c["worker"], c["condition"]) for c in job["conditions"]] == [("w1", "disk_full")]
