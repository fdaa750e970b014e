"""Several workers on one Postgres, as real processes: an API-only process and three
``serve --workers-only`` processes sharing one database and one download directory finish a
large job together (nothing fetched twice, JSOC's limits held for the whole cluster), and a
worker killed with SIGKILL mid-download has its work taken over once its lease expires."""

from __future__ import annotations

import signal
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.e2e.checks import (
    MAGNETOGRAMS,
    TEMPLATE_PATTERN,
    assert_files_verified,
    assert_polite,
    job_files,
)
from tests.e2e.procs import (
    EMAIL,
    FAST,
    Daemon,
    Proc,
    http_json,
    sim_manifest,
    sim_stats,
    start_emulator,
    wait_for,
)

pytestmark = [pytest.mark.postgres,
              pytest.mark.parametrize("daemon_database", ["postgres"], indirect=True)]
FINAL_STATES = ("succeeded", "completed_with_errors", "failed", "cancelled")
HEARTBEAT = 0.25
MAGNETOGRAM_CADENCE_S = 720
TWO_DAYS_PATTERN = TEMPLATE_PATTERN.replace("2014/01/01", "2014/01/0[123]")  # 01-03 00:00 too


def records_between(start: str, end: str) -> int:
    """hmi.M_720s records from start to end, both included (times on slots): one per 720-s
    slot."""
    span = datetime.fromisoformat(end) - datetime.fromisoformat(start)
    return int(span.total_seconds()) // MAGNETOGRAM_CADENCE_S + 1


@dataclass
class Cluster:
    """The emulator, one API-only process and N workers-only processes on one database."""

    jsoc: str
    api: Daemon
    workers: list[Daemon]
    held: dict[str, set[tuple[str, str]]] = field(default_factory=lambda: defaultdict(set))

    def by_id(self) -> dict[str, Daemon]:
        return {w.worker_id: w for w in self.workers if w.worker_id}

    def listed(self) -> dict[str, dict[str, Any]]:
        """GET /api/v1/workers, by worker id; what each holds is added to ``held``."""
        items = http_json(self.api.api + "/workers")["items"]
        for item in items:
            for kind, ids in (item["holding"] or {}).items():
                self.held[item["id"]].update((kind, str(i)) for i in ids)
        return {item["id"]: item for item in items}

    def downloaded_by(self) -> dict[str, set[str]]:
        """File ids each worker was seen downloading in its heartbeats."""
        return {wid: {i for kind, i in held if kind == "downloading"}
                for wid, held in self.held.items()}

    def wait_job(self, job_id: str, timeout: float) -> dict[str, Any]:
        """Wait for the job to end, sampling the worker list all along."""
        def ended() -> dict[str, Any] | None:
            self.listed()
            job = self.api.job(job_id)
            return job if job["state"] in FINAL_STATES else None
        return wait_for(ended, timeout, f"job {job_id} to end", interval=HEARTBEAT)


@pytest.fixture
def cluster(tmp_path: Path, daemon_database: str) -> Iterator[Any]:
    """A factory starting a Cluster; every process is stopped afterwards."""
    started: list[Proc | Daemon] = []

    def start(sim_args: tuple[str, ...], daemon_args: tuple[str, ...],
              workers: int = 3) -> Cluster:
        sim, url = start_emulator(tmp_path, [EMAIL], "--staging-delay", "0.3", *sim_args)
        started.append(sim)
        options = [*FAST, "--heartbeat-seconds", str(HEARTBEAT), *daemon_args]

        def daemon(role: str, name: str) -> Daemon:
            proc = Daemon(tmp_path, url, EMAIL, daemon_database, options, role=role, name=name)
            started.append(proc)
            return proc

        api = daemon("api", "api").start()  # migrates the blank database
        crew = [daemon("workers", f"worker{n}").start(wait=False) for n in range(workers)]
        for worker in crew:
            worker.wait_ready()
        return Cluster(url, api, crew)

    yield start
    for proc in reversed(started):
        proc.stop()


def assert_listed_alive(cluster: Cluster, listed: dict[str, dict[str, Any]],
                        worker_ids: list[str]) -> None:
    """Each worker is listed alive, with its own pid and a heartbeat from the last seconds."""
    now = datetime.now(UTC)
    for wid in worker_ids:
        item = listed[wid]
        assert item["alive"] and item["stopped_at"] is None, item
        assert item["pid"] == cluster.by_id()[wid].proc.popen.pid, item  # type: ignore[union-attr]
        age = (now - datetime.fromisoformat(item["heartbeat_at"])).total_seconds()
        assert age < 10 * HEARTBEAT + 2, (age, item)


def test_three_workers_share_one_large_job(cluster) -> None:
    c = cluster(("--file-size", "16K"), ("--max-chunk-records", "30"))
    worker_ids = [w.worker_id for w in c.workers]
    assert len(set(worker_ids)) == 3, worker_ids
    spec = {**MAGNETOGRAMS, "end": "2014-01-03T00:00:00Z"}
    expected_files = records_between(spec["start"], spec["end"])
    job = c.api.submit(spec)
    seen = wait_for(lambda: (d := c.listed()) and all(w in d for w in worker_ids) and d,
                    30, "all three workers in GET /workers", interval=0.05)
    assert_listed_alive(c, seen, worker_ids)
    final = c.wait_job(job["id"], timeout=120)
    assert final["state"] == "succeeded", final
    assert_listed_alive(c, c.listed(), worker_ids)

    files = assert_files_verified(c.api, job["id"], c.jsoc, TWO_DAYS_PATTERN)
    assert len(files) == expected_files == 2 * 86400 // MAGNETOGRAM_CADENCE_S + 1
    assert len({f["url"] for f in files}) == len(files)
    assert all(f["attempts"] == 0 for f in files), [f for f in files if f["attempts"]]
    stats = assert_polite(c.jsoc, EMAIL)  # one client IP: the limits held cluster-wide
    assert set(stats["files"]) == {urlsplit(f["url"]).path for f in files}
    for path, served in stats["files"].items():
        assert served["requests"] == 1 and served["full_downloads"] == 1, (path, served)
    assert stats["bytes_served_again"] == 0, stats["bytes_served_again"]
    chunks_done = final["chunks"]["done"]
    assert chunks_done >= expected_files // 30
    assert stats["emails"][EMAIL]["exp_requests"] == chunks_done
    assert all(e["requested_times"] == 1 for e in stats["exports"].values())

    # The work was spread: several workers were seen holding downloads, never the same file.
    downloads = c.downloaded_by()
    busy = [wid for wid in worker_ids if downloads.get(wid)]
    assert len(busy) >= 2, {wid: len(ids) for wid, ids in downloads.items()}
    for a in worker_ids:
        for b in worker_ids:
            if a < b:
                assert not downloads.get(a, set()) & downloads.get(b, set()), (a, b)
    assert {i for ids in downloads.values() for i in ids} <= {str(f["id"]) for f in files}

    # SIGTERM: each worker drains, exits 0 and is listed as stopped, holding nothing.
    for worker in c.workers:
        worker.proc.signal(signal.SIGTERM)  # type: ignore[union-attr]
    for worker in c.workers:
        assert worker.proc.wait(30) == 0, worker.proc.log()[-2000:]  # type: ignore[union-attr]
    listed = c.listed()
    for wid in worker_ids:
        assert listed[wid]["stopped_at"] and not listed[wid]["alive"], listed[wid]
        assert not listed[wid]["holding"], listed[wid]


def downloading_victim(c: Cluster, job_id: str) -> tuple[Daemon, dict[str, Any]] | None:
    """A worker whose heartbeat shows it downloading a file that is now on disk part-way, in
    its first half (so the kill that follows lands well before the file is complete)."""
    rows = {str(f["id"]): f for f in job_files(c.api, job_id)}
    for wid, item in c.listed().items():
        worker = c.by_id().get(wid)
        for file_id in (item["holding"] or {}).get("downloading", []):
            row = rows.get(str(file_id))
            if worker is None or row is None or row["state"] != "downloading":
                continue
            part = c.api.data_dir / "files" / (row["dest_path"] + ".part")
            size = sim_manifest(c.jsoc)[urlsplit(row["url"]).path]["size"]
            if part.is_file() and 0 < part.stat().st_size < size // 2:
                return worker, row
    return None


def test_sigkilled_worker_is_taken_over_after_its_lease_expires(cluster) -> None:
    # Files of about 2.5 MB (12 MB of image, compressed) at 1 MB/s: the downloader writes in
    # 1 MB batches, so a .part of 1 MB means the kill lands more than a second before the end.
    c = cluster(("--file-size", "12M", "--bandwidth", "1M"),
                ("--max-chunk-records", "2", "--lease-seconds", "2"))
    spec = {**MAGNETOGRAMS, "end": "2014-01-01T01:12:00Z"}
    job = c.api.submit(spec)
    victim, held = wait_for(lambda: downloading_victim(c, job["id"]), 60,
                            "a worker part-way through a file", interval=0.05)
    victim.proc.signal(signal.SIGKILL)  # type: ignore[union-attr]
    victim.proc.wait(10)  # type: ignore[union-attr]
    victim_id = victim.worker_id
    survivors = [w.worker_id for w in c.workers if w is not victim and w.worker_id]
    assert victim_id and len(survivors) == 2
    row = next(f for f in job_files(c.api, job["id"]) if f["id"] == held["id"])
    assert row["state"] in ("downloading", "pending"), row  # leased, or released already

    final = c.wait_job(job["id"], timeout=90)
    assert final["state"] == "succeeded", final
    files = assert_files_verified(c.api, job["id"], c.jsoc, TEMPLATE_PATTERN)
    assert len(files) == records_between(spec["start"], spec["end"])
    stats = assert_polite(c.jsoc, EMAIL)
    path = urlsplit(held["url"]).path
    assert stats["files"][path]["requests"] >= 2, stats["files"][path]  # cut off, then resumed
    manifest = sim_manifest(c.jsoc)
    smallest = min(manifest[urlsplit(f["url"]).path]["size"] for f in files)
    assert stats["bytes_served_again"] < smallest // 2, stats["bytes_served_again"]
    assert all(e["requested_times"] == 1 for e in stats["exports"].values())

    # A survivor was seen holding the file after the kill, and finished it.
    assert any(("downloading", str(held["id"])) in c.held[wid] for wid in survivors), c.held
    listed = c.listed()
    assert not listed[victim_id]["alive"], listed[victim_id]
    # it never said goodbye: a survivor on this host saw its process gone and released its work
    assert listed[victim_id]["stopped_at"] is not None
    assert_listed_alive(c, listed, survivors)
    assert sim_stats(c.jsoc)["violations"] == 0
