"""Operating the real daemon: /metrics scraped during a job (counters move, politeness gauges
within their limits), readiness as JSOC goes away, JSON logs line by line, and no secret in
any log line."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url

from tests.e2e.procs import (
    EMAIL,
    FAST,
    Daemon,
    Proc,
    http_json,
    sim_faults,
    start_emulator,
    wait_for,
)

TOKEN = "tok-e2e-3f9a7c1d5b2e"
DB_PASSWORD = "pw-e2e-8c2b4e6a0d"
JOB = {"series": "hmi.M_720s", "start": "2014-01-01T00:00:00Z", "end": "2014-01-01T03:00:00Z",
       "segments": ["magnetogram"]}  # 16 files (both ends)
LOG_KEYS = {"time", "level", "logger", "message", "job", "export", "file", "worker"}
Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(daemon: Daemon, token: str | None = TOKEN) -> Samples:
    """GET /metrics (Prometheus text), parsed: sample name -> [(labels, value)]."""
    request = urllib.request.Request(f"http://127.0.0.1:{daemon.port}/metrics")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read().decode()
    samples: Samples = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name].append((sample.labels, sample.value))
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(v for have, v in samples.get(name, []) if labels.items() <= have.items())


def check_politeness(samples: Samples) -> int:
    """Connections per host and pending exports per email within their limits; returns the
    most connections seen on one host."""
    limits = {labels["host"]: v for labels, v in samples["jsoc_bulk_connection_limit"]}
    most = 0
    for labels, active in samples["jsoc_bulk_active_connections"]:
        assert active <= limits[labels["host"]], (labels, active, limits)
        most = max(most, int(active))
    pending_limit = value(samples, "jsoc_bulk_pending_exports_limit")
    assert pending_limit == 1
    for labels, pending in samples["jsoc_bulk_pending_exports"]:
        assert pending <= pending_limit, (labels, pending)
    return most


def with_password(url: str | None) -> str | None:
    """The Postgres URL with a password (trust authentication ignores it): it must never be
    logged."""
    if url is None:
        return None
    return make_url(url).set(password=DB_PASSWORD).render_as_string(hide_password=False)


@pytest.fixture
def ops_stack(tmp_path: Path, daemon_database: str | None) -> Iterator[tuple[Proc, str, Daemon]]:
    sim, url = start_emulator(tmp_path, [EMAIL], "--staging-delay", "0.3", "--file-size", "512K",
                              "--bandwidth", "1M", "--fault", "ignore_range_rate=1",
                              "--fault", "truncate_rate=0.2")
    daemon = Daemon(tmp_path, url, EMAIL, with_password(daemon_database),
                    [*FAST, "--max-chunk-records", "5", "--token", TOKEN,
                     "--log-format", "json"])
    try:
        yield sim, url, daemon.start()
    finally:
        daemon.stop()
        sim.stop()


def watch_job(daemon: Daemon, job_id: str) -> tuple[list[float], int, dict[str, Any]]:
    """Scrape until the job ends: files counted done after each scrape, most connections."""
    seen, most = [], 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        samples = scrape(daemon)
        most = max(most, check_politeness(samples))
        seen.append(value(samples, "jsoc_bulk_files_downloaded_total", job_id=job_id))
        job = http_json(f"{daemon.api}/jobs/{job_id}", token=TOKEN)
        if job["state"] not in ("queued", "running"):
            return seen, most, job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not end; files counted {seen[-5:]}")


def test_metrics_move_during_a_real_job_and_politeness_holds(ops_stack) -> None:
    sim, jsoc_url, daemon = ops_stack
    with pytest.raises(urllib.error.HTTPError) as refused:
        scrape(daemon, token=None)
    assert refused.value.code == 401
    job = http_json(f"{daemon.api}/jobs", "POST", JOB, token=TOKEN)
    sim_faults(jsoc_url, outage_seconds=1.5)  # accepted; now JSOC answers 500 for a while
    seen, most, final = watch_job(daemon, job["id"])
    assert final["state"] == "succeeded", final
    assert seen == sorted(seen) and len(set(seen)) >= 3, seen  # the counter moved
    assert most == 1  # one connection to JSOC's host, and it was seen in use
    files = http_json(f"{daemon.api}/jobs/{job['id']}/files?limit=100", token=TOKEN)["items"]
    samples = scrape(daemon)
    assert value(samples, "jsoc_bulk_files_downloaded_total", job_id=job["id"]) == len(files) == 16
    assert value(samples, "jsoc_bulk_downloaded_bytes_total", job_id=job["id"]) == sum(
        f["bytes_done"] for f in files)
    assert value(samples, "jsoc_bulk_refetched_bytes_total") > 0  # Range ignored: fetched again
    assert value(samples, "jsoc_bulk_jsoc_request_errors_total", kind="http_500") > 0
    assert value(samples, "jsoc_bulk_retries_total") > 0
    assert value(samples, "jsoc_bulk_jsoc_request_seconds_count", cgi="jsoc_fetch") > 0
    assert value(samples, "jsoc_bulk_export_replies_total", op="exp_request") >= 3
    assert value(samples, "jsoc_bulk_export_replies_total", op="exp_status", status="0") >= 3
    assert value(samples, "jsoc_bulk_db_transaction_seconds_count",
                 operation="record_file_outcomes") > 0
    assert value(samples, "jsoc_bulk_worker_heartbeats_total") > 0
    assert value(samples, "jsoc_bulk_jobs", state="succeeded") == 1
    assert value(samples, "jsoc_bulk_database_up") == 1
    jsoc_host = jsoc_url.split("//")[1].rstrip("/")
    assert value(samples, "jsoc_bulk_circuit_breaker_state", host=jsoc_host, state="closed") == 1
    check_readiness_as_jsoc_goes_away(daemon, sim)
    check_logs(daemon, job["id"])


def check_readiness_as_jsoc_goes_away(daemon: Daemon, sim: Proc) -> None:
    ready = http_json(f"{daemon.api}/ready")  # no token: probes cannot send one
    assert ready["status"] == "ready" and ready["migrations"] == "current", ready
    assert ready["database"] == "ok" and ready["jsoc"]["state"] == "up", ready
    sim.stop()
    # the API asks JSOC about a series it has not seen: the call fails
    with pytest.raises(urllib.error.HTTPError):
        http_json(f"{daemon.api}/jobs", "POST", {**JOB, "series": "aia.lev1_euv_12s"},
                  token=TOKEN)
    ready = wait_for(lambda: (r := http_json(f"{daemon.api}/ready"))["jsoc"]["state"] == "down"
                     and r, 30, "ready to report JSOC down")
    assert ready["status"] == "degraded" and ready["jsoc"]["since"], ready
    health = http_json(f"{daemon.api}/health")
    assert health["status"] == "degraded" and health["jsoc"]["state"] == "down", health


def check_logs(daemon: Daemon, job_id: str) -> None:
    """Every line is one JSON object with the fields; stage lines name their job, export and
    worker; no access lines at INFO; no secret anywhere."""
    daemon.stop()
    assert daemon.proc is not None
    text = daemon.proc.log()
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines and all(set(entry) >= LOG_KEYS for entry in lines)
    assert not [e for e in lines if e["logger"] == "aiohttp.access"]
    about_job = [e for e in lines if e["job"] == job_id]
    assert any(e["export"] and e["worker"] for e in about_job), about_job
    assert any(e["file"] for e in about_job), about_job  # a truncated transfer, logged
    assert TOKEN not in text and DB_PASSWORD not in text
