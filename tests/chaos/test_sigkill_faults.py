"""Chaos, end to end (real daemon and emulator processes, SQLite and Postgres): the daemon is
SIGKILLed twice mid-job while the emulator resets and truncates downloads, ignores every Range,
answers 500s and goes down for a while; the job still succeeds with every file verified against
the emulator's manifest, JSOC's politeness rules are never broken and the daemon logs no
ERROR line or traceback."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.e2e.checks import assert_files_verified, assert_polite, assert_quiet_log
from tests.e2e.procs import EMAIL, FAST, Daemon, http_json, sim_faults, start_emulator, wait_for

pytestmark = pytest.mark.e2e
FAULTS = {"cgi_error_rate": 0.25, "reset_rate": 0.15, "truncate_rate": 0.15,
          "ignore_range_rate": 1, "seed": 11}
OUTAGE_SECONDS = 2
KILLS = 2
AIA_171 = {"series": "aia.lev1_euv_12s", "start": "2014-01-01T00:00:00Z",
           "end": "2014-01-01T00:06:00Z", "wavelengths": [171], "segments": ["image"],
           "protocol": "as-is", "path_template": "{series}/{filename}"}  # 31 records


def done_count(daemon: Daemon, job_id: str) -> int:
    return int(daemon.job(job_id)["files"].get("done", 0))


def kill_and_restart(daemon: Daemon) -> None:
    """SIGKILL the daemon process (it really dies by the signal) and start it again."""
    assert daemon.proc is not None
    daemon.proc.signal(signal.SIGKILL)
    assert daemon.proc.wait(10) == -signal.SIGKILL
    daemon.start()


def test_sigkills_during_emulator_faults_lose_nothing(db_url: str, tmp_path: Path) -> None:
    fault_args = [a for name, value in FAULTS.items() for a in ("--fault", f"{name}={value}")]
    sim, jsoc = start_emulator(tmp_path, [EMAIL], "--staging-delay", "0.3", "--file-size",
                               "64K", "--bandwidth", "2M", *fault_args)
    daemon = Daemon(tmp_path, jsoc, EMAIL, db_url, [*FAST, "--max-chunk-records", "8"])
    try:
        daemon.start()
        job = daemon.submit(AIA_171)["id"]
        for kill in range(KILLS):
            before = done_count(daemon, job)
            wait_for(lambda b=before: done_count(daemon, job) >= b + 4, 60,
                     "progress since the last (re)start", interval=0.05)
            kill_and_restart(daemon)
            if kill == 0:  # and JSOC goes down for a while after the first restart
                assert sim_faults(jsoc, outage_seconds=OUTAGE_SECONDS)["in_outage"]
        final = daemon.wait_job(job, timeout=90)
        assert final["state"] == "succeeded", final
        files = assert_files_verified(daemon, job, jsoc, r"aia\.lev1_euv_12s/.+\.fits")
        assert len(files) == 31
        assert_polite(jsoc, EMAIL)
        faults = http_json(jsoc + "_sim/faults")
        for kind in ("cgi_error", "reset", "truncate", "ignore_range"):
            assert faults["fired"].get(kind, 0) > 0, (kind, faults["fired"])  # really happened
        assert_quiet_log(daemon)  # faults are expected: logged without ERROR or traceback
    finally:
        daemon.stop()
        sim.stop()
