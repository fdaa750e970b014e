"""Running jobs in-process for the service's tests: a job spec over hmi.M_45s slots, fast
worker settings, a Worker run as a task until a job ends, and checks of the files it stored
against what the emulator served."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from service.db.models import JOB_FINAL
from service.db.repo import Repo
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
