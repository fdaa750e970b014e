"""Meeting sunpy and drms users, through the real daemon and emulator processes: the same
records as sunpy's search, the preview (REST and ``submit --dry-run``), and the notify address
checked with JSOC's checkAddress, also when JSOC cannot be reached at submit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
from pathlib import Path
from typing import Any

from sunpy.net import attrs as a
from sunpy.net import jsoc

from tests.e2e.checks import assert_files_verified, job_files
from tests.e2e.procs import EMAIL, FAST, Daemon, free_port, http_json, start_emulator
from tests.emulators import sunpy_pointed_at

PENDING = "waiting@example.org"
HOUR = {"series": "hmi.v_45s", "start": "2014-01-01T00:00:00", "end": "2014-01-01T01:00:00",
        "segments": ["Dopplergram"]}
BEFORE_SDO = {"series": "aia.lev1_euv_12s", "start": "2009-01-01T00:00:00Z",
              "end": "2009-01-01T01:00:00Z", "wavelengths": [171]}


def problem(call: Any) -> tuple[int, dict[str, Any]]:
    """The status and problem document of a refused request."""
    try:
        call()
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    raise AssertionError("the request was not refused")


def sunpy_record_names(jsoc_url: str, spec: dict[str, Any]) -> list[str]:
    """sunpy's JSOCClient.search on the emulator, as lower-case record names."""
    with sunpy_pointed_at(jsoc_url):
        result = jsoc.JSOCClient().search(a.Time(spec["start"], spec["end"]),
                                          a.jsoc.Series(spec["series"]))
    return sorted(f"{spec['series']}[{row['T_REC']}][{row['CAMERA']}]".lower() for row in result)


def cli(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    """The jsoc-bulk CLI as a process, talking to the daemon's API."""
    env = {**os.environ, "JSOC_BULK_API_URL": f"http://127.0.0.1:{daemon.port}/"}
    return subprocess.run([sys.executable, "-m", "service.cli", *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_a_job_downloads_exactly_sunpys_records(stack) -> None:
    jsoc_url, daemon = stack(daemon_args=("--max-chunk-records", "20"))
    job = daemon.submit(HOUR)
    final = daemon.wait_job(job["id"], timeout=180)
    assert final["state"] == "succeeded", final
    files = assert_files_verified(daemon, job["id"], jsoc_url)
    expected = sunpy_record_names(jsoc_url, HOUR)
    assert len(expected) == 81  # 00:00:35 … 01:00:35 TAI: both end slots, as sunpy asks
    assert sorted(f["record"].lower() for f in files) == expected
    assert final["chunks"]["done"] == 5  # 81 records in exports of at most 20
    assert final["recordset"] == \
        "hmi.v_45s[2014.01.01_00:00:35_TAI-2014.01.01_01:00:35_TAI]{Dopplergram}"
    status = cli(daemon, "status", job["id"])
    assert status.returncode == 0 and final["recordset"] in status.stdout


def test_preview_and_dry_run_then_nothing_selected_is_refused(stack) -> None:
    _, daemon = stack(daemon_args=("--max-chunk-records", "20"))
    preview = http_json(daemon.api + "/jobs/preview", "POST", HOUR)
    assert (preview["records"], preview["exports"]) == (81, 5)
    assert preview["first_record"] == "hmi.V_45s[2014.01.01_00:00:45_TAI][2]"
    assert preview["last_record"] == "hmi.V_45s[2014.01.01_01:00:45_TAI][2]"
    assert preview["est_bytes"] > 0
    dry = cli(daemon, "submit", "--series", "hmi.v_45s", "--start", "2014/01/01 00:00",
              "--end", "2014/01/01 01:00", "--segments", "Dopplergram", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "81 record(s) in about 5 export(s)" in dry.stdout
    assert preview["recordset"] in dry.stdout and preview["last_record"] in dry.stdout
    empty = cli(daemon, "submit", "--json", "--dry-run", "--series", BEFORE_SDO["series"],
                "--start", BEFORE_SDO["start"], "--end", BEFORE_SDO["end"],
                "--wavelengths", "171")
    assert empty.returncode == 0 and json.loads(empty.stdout)["records"] == 0
    status, doc = problem(lambda: daemon.submit(BEFORE_SDO))
    assert status == 422 and "would select nothing" in doc["detail"]
    refused = cli(daemon, "submit", "--series", "hmi.v_45s", "--start", "2014/01/01 00:00",
                  "--end", "2014/01/01 01:00", "--cadence", "ten minutes")
    assert refused.returncode == 1 and "10 min" in refused.stderr  # what is accepted
    assert http_json(daemon.api + "/jobs")["items"] == []


def test_notify_checked_at_submit_and_when_jsoc_answers_again(tmp_path: Path,
                                                              daemon_database: str | None) -> None:
    port = free_port()
    sim_args = ("--port", str(port), "--pending-email", PENDING, "--staging-delay", "0.2")
    sim, jsoc_url = start_emulator(tmp_path, [EMAIL], *sim_args)
    daemon = Daemon(tmp_path, jsoc_url, EMAIL, daemon_database, FAST)
    try:
        daemon.start()
        for address, needle in (("nobody@example.org", "register_email.html"),
                                (PENDING, "confirmation mail")):
            status, doc = problem(lambda a=address: daemon.submit({**HOUR, "notify": a}))
            assert status == 422 and needle in doc["detail"], (address, doc)
        http_json(daemon.api + "/jobs/preview", "POST", HOUR)  # series metadata now known
        sim.stop()  # JSOC unreachable: the job is accepted, its address not yet checked
        job = daemon.submit({**HOUR, "notify": "late@example.org"})
        assert job["state"] == "queued"
        warned = daemon.job(job["id"])["recent_errors"]
        assert any("could not be reached" in e["message"] for e in warned), warned
        sim, _ = start_emulator(tmp_path, [EMAIL], *sim_args)  # JSOC is back, same address
        final = daemon.wait_job(job["id"], timeout=120)
        assert final["state"] == "failed"
        assert "late@example.org is not registered with JSOC" in final["error"]
        assert "register_email.html" in final["error"] and job_files(daemon, job["id"]) == []
    finally:
        daemon.stop()
        sim.stop()


def test_misspelt_series_gets_the_closest_names(stack) -> None:
    _, daemon = stack()
    status, doc = problem(lambda: daemon.submit({**HOUR, "series": "hmi.v_45"}))
    assert status == 422 and "did you mean" in doc["detail"] and "hmi.V_45s" in doc["detail"]
    assert http_json(daemon.api + "/jobs")["items"] == []
