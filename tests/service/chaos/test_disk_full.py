"""Disk full (a real size-limited tmpfs as the download root): the worker pauses downloads
worker-wide without spending the files' attempts, says so on the job and in its heartbeat,
and finishes the job once space is freed (``retry`` makes waiting files due at once)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from jsocsim import run_emulator
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
            conditions = await wait_for(lambda: repo.worker_conditions(stale_after=10), 30,
                                        "the worker to report the disk full")
            assert "No space left" in conditions["w1"]["disk_full"]["error"]
            summary = await repo.job_summary(job.id)
            assert any(e.kind == "disk_full" for e in summary.recent_events)
            assert summary.job.state == "running"
            files = await repo.list_files(job.id)
            assert not [f for f in files if f.state == "failed"], await describe(repo, job.id)
            filler.unlink()  # space is back
            await repo.retry_job(job.id)
            await wait_for(lambda: final_state(repo, job.id), 40, "the job to finish")
            files = await repo.list_files(job.id)
            assert (await repo.get_job(job.id)).state == "succeeded", await describe(
                repo, job.id)
            check_files_match_manifest(emu, settings.download_dir, files)
            # the heartbeat after the recovery clears the condition
            async def cleared() -> bool:
                return await repo.worker_conditions(stale_after=10) == {}
            await wait_for(cleared, 15, "the disk-full condition to clear")
        finally:
            await running.stop()
