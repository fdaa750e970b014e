"""The emulator and the daemon as real processes: jobs complete with every file verified, and
SIGKILL / SIGTERM of the daemon lose nothing."""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
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
    Daemon,
    http_json,
    sim_manifest,
    sim_stats,
    wait_for,
)


def downloading(daemon: Daemon) -> bool:
    """True while some file is part-way: a non-empty .part file in the download directory."""
    return any(p.stat().st_size > 0 for p in (daemon.data_dir / "files").rglob("*.part"))


def test_multi_chunk_job_completes_with_verified_files(stack) -> None:
    jsoc, daemon = stack(daemon_args=("--max-chunk-records", "6"))
    job = daemon.submit(MAGNETOGRAMS)
    final = daemon.wait_job(job["id"], timeout=120)
    assert final["state"] == "succeeded", final
    files = assert_files_verified(daemon, job["id"], jsoc, TEMPLATE_PATTERN)
    assert len(files) == 21  # 4 hours of 720-s slots, both end slots included (00:00 … 04:00)
    assert final["chunks"].get("done", 0) >= 4  # 21 records, at most 6 per export
    stats = assert_polite(jsoc, EMAIL)
    assert stats["emails"][EMAIL]["exp_requests"] == final["chunks"]["done"]


def test_sigkill_mid_download_then_restart_resumes(stack) -> None:
    # 4 MB/s: each file of several MB takes a second or two, so the kill lands inside one.
    jsoc, daemon = stack(sim_args=("--file-size", "8M", "--bandwidth", "4M"),
                         daemon_args=("--max-chunk-records", "3"))
    job = daemon.submit({**MAGNETOGRAMS, "end": "2014-01-01T01:12:00Z"})  # 7 records
    wait_for(lambda: any(f["state"] == "done" for f in job_files(daemon, job["id"]))
             and downloading(daemon), 90, "one file done and one part-way")
    done_before = {f["url"] for f in job_files(daemon, job["id"]) if f["state"] == "done"}
    exports_before = sim_stats(jsoc)["emails"][EMAIL]["exp_requests"]
    assert daemon.proc is not None
    daemon.proc.signal(signal.SIGKILL)
    daemon.proc.wait(10)
    daemon.start()
    final = daemon.wait_job(job["id"], timeout=120)
    assert final["state"] == "succeeded", final
    files = assert_files_verified(daemon, job["id"], jsoc, TEMPLATE_PATTERN)
    stats = assert_polite(jsoc, EMAIL)
    manifest = sim_manifest(jsoc)
    smallest = min(manifest[urlsplit(f["url"]).path]["size"] for f in files)
    for path, served in stats["files"].items():
        if any(f["url"].endswith(path) and f["url"] in done_before for f in files):
            assert served["requests"] == 1, (path, served)  # finished files never refetched
    assert stats["bytes_served_again"] < smallest // 2, stats["bytes_served_again"]
    # Exports submitted before the kill were polled again, not requested again.
    new_exports = stats["emails"][EMAIL]["exp_requests"] - exports_before
    assert new_exports <= final["chunks"]["done"] - 1
    assert all(e["requested_times"] == 1 for e in stats["exports"].values())


def test_sigterm_drains_exits_zero_and_restart_finishes(stack) -> None:
    jsoc, daemon = stack(sim_args=("--file-size", "8M", "--bandwidth", "4M"),
                         daemon_args=("--max-chunk-records", "3"))
    job = daemon.submit({**MAGNETOGRAMS, "end": "2014-01-01T01:12:00Z"})
    wait_for(lambda: downloading(daemon), 90, "a download in progress")
    assert daemon.proc is not None
    daemon.proc.signal(signal.SIGTERM)
    assert daemon.proc.wait(30) == 0, daemon.proc.log()[-2000:]
    daemon.start()
    final = daemon.wait_job(job["id"], timeout=120)
    assert final["state"] == "succeeded", final
    assert_files_verified(daemon, job["id"], jsoc, TEMPLATE_PATTERN)
    stats = assert_polite(jsoc, EMAIL)
    assert all(e["requested_times"] == 1 for e in stats["exports"].values())


def problem(daemon: Daemon, body: Any, raw: bytes | None = None) -> tuple[int, dict[str, Any]]:
    """POST a job and return (HTTP status, problem document) of the refusal."""
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(daemon.api + "/jobs", data=data, method="POST",
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    return refused.value.code, json.loads(refused.value.read())


@pytest.mark.parametrize("daemon_database", ["sqlite"], indirect=True)
def test_bad_input_gets_4xx_saying_what_to_fix(stack) -> None:
    _, daemon = stack()
    cases = [
        ({**MAGNETOGRAMS, "series": "hmi.M_721s"}, "hmi.M_721s"),
        ({**MAGNETOGRAMS, "segments": ["bitmap"]}, "magnetogram"),
        ({**MAGNETOGRAMS, "where": ["NOSUCHKEY > 1"]}, "NOSUCHKEY"),
        ({**MAGNETOGRAMS, "start": "yesterday-ish"}, "start"),
        ({**MAGNETOGRAMS, "path_template": "../../{filename}"}, "path_template"),
        ({**MAGNETOGRAMS, "path_template": "{series}/{nosuchfield}"}, "nosuchfield"),
    ]
    for body, mentioned in cases:
        status, doc = problem(daemon, body)
        assert 400 <= status < 500 and doc["status"] == status, doc
        assert mentioned in str(doc), (mentioned, doc)
    status, doc = problem(daemon, None, raw=b'{"series": "hmi.M_720s",')
    assert status == 400 and "JSON" in doc["detail"], doc
    assert http_json(daemon.api + "/jobs")["items"] == []  # nothing was accepted


AIA_171 = {"series": "aia.lev1_euv_12s", "start": "2014-01-01T00:00:00Z",
           "end": "2014-01-01T00:20:00Z", "wavelengths": [171], "segments": ["image"],
           "protocol": "as-is", "path_template": "{series}/{filename}"}


def done_count(daemon: Daemon, job_id: str) -> int:
    return int(daemon.job(job_id)["files"].get("done", 0))


def test_repeated_sigkill_of_many_small_files_restarts_at_once_and_loses_nothing(stack) -> None:
    """Group commits under SIGKILL: files renamed but not yet recorded are adopted, the dead
    daemon's leases are released by its successor at once (a 60 s lease would otherwise stall
    each restart), and nothing is fetched twice beyond the bodies in flight."""
    kills = 3
    jsoc, daemon = stack(sim_args=("--file-size", "64K", "--bandwidth", "1M"),
                         daemon_args=("--lease-seconds", "60", "--heartbeat-seconds", "5"))
    job = daemon.submit(AIA_171)
    for _ in range(kills):
        before = done_count(daemon, job["id"])
        wait_for(lambda b=before: done_count(daemon, job["id"]) >= b + 5, 30,
                 "progress since the last (re)start", interval=0.05)
        assert daemon.proc is not None
        daemon.proc.signal(signal.SIGKILL)
        daemon.proc.wait(10)
        daemon.start()
    final = daemon.wait_job(job["id"], timeout=45)  # well inside one 60 s lease
    assert final["state"] == "succeeded", final
    files = assert_files_verified(daemon, job["id"], jsoc)
    assert len(files) == 101  # 20 minutes of 12-s slots, both end slots included
    stats = assert_polite(jsoc, EMAIL)
    full = {path: served["full_downloads"] for path, served in stats["files"].items()
            if any(f["url"].endswith(path) for f in files)}
    assert len(full) == 101 and sum(full.values()) <= 101 + kills, full
    largest = max(sim_manifest(jsoc)[urlsplit(f["url"]).path]["size"] for f in files)
    assert stats["bytes_served_again"] <= kills * largest, stats["bytes_served_again"]
