"""A job completes with every file verified while the emulator misbehaves in every way JSOC
does: 500s, resets, truncated bodies, ignored Range, status 6 and 7, an expiry, an outage."""

from __future__ import annotations

import urllib.parse

import pytest

from tests.e2e.checks import (
    MAGNETOGRAMS,
    TEMPLATE_PATTERN,
    assert_files_verified,
    assert_polite,
    job_files,
)
from tests.e2e.procs import EMAIL, http_json, sim_faults, sim_stats, wait_for

FAULTS = ["cgi_error_rate=0.15", "reset_rate=0.2", "truncate_rate=0.2",
          "ignore_range_rate=1", "status6_polls=2", "export_expire_after=3", "seed=7"]
OUTAGE_SECONDS = 30


def foreign_export(jsoc: str) -> str:
    """Another client (a notebook with the same email) holds the email's only export slot."""
    query = urllib.parse.urlencode({
        "op": "exp_request", "ds": "hmi.Ic_720s[2015.01.01_00:00:00_TAI/1h]", "notify": EMAIL,
        "method": "url", "protocol": "fits", "format": "json"})
    for _ in range(20):  # the CGI error fault applies to us too
        try:
            reply = http_json(f"{jsoc}cgi-bin/ajax/jsoc_fetch?{query}")
        except OSError:
            continue
        assert reply["status"] == 2, reply
        return reply["requestid"]
    raise AssertionError("could not place the foreign export")


@pytest.mark.parametrize("daemon_database", ["sqlite"], indirect=True)
def test_job_completes_through_every_fault(stack) -> None:
    # 2 MB files: a broken transfer leaves bytes to resume from, so Range requests happen
    # (and every one is ignored: the daemon must restart those files from zero).
    sim_args = ["--file-size", "2M", "--bandwidth", "4M", "--staging-delay", "2"]
    jsoc, daemon = stack(sim_args=tuple(a for f in FAULTS for a in ("--fault", f)) + tuple(
        sim_args), daemon_args=("--max-chunk-records", "4"))
    foreign = foreign_export(jsoc)
    job = daemon.submit({**MAGNETOGRAMS, "end": "2014-01-01T03:00:00Z"})  # 16 records
    wait_for(lambda: any(f["state"] == "done" for f in job_files(daemon, job["id"])), 120,
             "the first file despite the faults")
    sim_faults(jsoc, outage_seconds=OUTAGE_SECONDS)  # JSOC goes down mid-job
    final = daemon.wait_job(job["id"], timeout=240)
    assert final["state"] == "succeeded", final
    assert_files_verified(daemon, job["id"], jsoc, TEMPLATE_PATTERN)
    stats = assert_polite(jsoc, EMAIL)
    fired = http_json(jsoc + "_sim/faults")["fired"]
    for kind in ("cgi_error", "reset", "truncate", "ignore_range"):
        assert fired.get(kind, 0) > 0, (kind, fired)  # each fault really happened
    mail = stats["emails"][EMAIL]
    assert mail["status7"] >= 1  # the foreign export held the slot when the job began
    # Status 6 answered the first polls of every staged export, and they were polled through.
    ours = {i: e for i, e in stats["exports"].items() if i != foreign}
    assert ours and all(e["status_polls"] > 2 for e in ours.values() if e["status"] == 0)
    # Exports expired three seconds after completion, mid-download: the job re-exported.
    assert mail["exp_requests"] > final["chunks"]["done"] + 1, (mail, final["chunks"])
    assert sim_stats(jsoc)["emails"][EMAIL]["peak_pending_exports"] <= 1
