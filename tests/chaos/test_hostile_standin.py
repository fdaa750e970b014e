"""Chaos, end to end (real daemon process, SQLite and Postgres): a hostile JSOC stand-in in
front of the emulator sends bad file names (``../x``, a NUL, 300 characters), wrong types (a
done export whose ``data`` is not a list and whose ``count`` is not a number, then counts as
strings) and bad lengths (a Content-Length larger than the body, smaller than it, negative).
The good files end verified against the emulator's manifest, the bad ones failed with errors
saying what was wrong, the API never answers 5xx and the daemon logs no traceback storm."""

from __future__ import annotations

import urllib.error
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.hostile import HostileJsoc, in_thread
from tests.e2e.checks import assert_files_verified, assert_polite, assert_quiet_log, job_files
from tests.e2e.procs import EMAIL, FAST, Daemon, http_json, start_emulator, wait_for

pytestmark = pytest.mark.e2e
BAD_NAMES = ["../x", "bad\u0000name.fits", "a" * 300 + ".fits"]
MAX_ATTEMPTS = 3
MAGNETOGRAMS = {"series": "hmi.M_720s", "start": "2014-01-01T00:00:00Z",
                "end": "2014-01-01T02:00:00Z", "segments": ["magnetogram"],
                "protocol": "fits", "path_template": "{series}/{filename}"}  # 11 records
MAX_LOG_LINES = 60  # a quiet run logs ~15
TERMINAL = ("succeeded", "completed_with_errors", "failed", "cancelled")


class Garbler:
    """What the stand-in does: the tampers, and a count of what it sent."""

    def __init__(self) -> None:
        self.malformed: set[str] = set()  # exports whose first done reply had wrong types
        self.renamed_in: str | None = None  # the export whose listing got the bad names
        self.string_counts = 0
        self.files: list[str] = []  # file paths in the order first requested
        self.requests: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()  # bad lengths sent, by kind

    def replies(self, op: str, reply: dict[str, Any]) -> dict[str, Any] | None:
        if reply.get("status") not in (0, "0") or not isinstance(reply.get("data"), list):
            return None
        export = str(reply.get("requestid"))
        if export not in self.malformed:
            self.malformed.add(export)
            return {"status": 0, "requestid": export, "data": "notalist", "count": "abc"}
        if self.renamed_in in (None, export):
            self.renamed_in = export
            for row, bad in zip(reply["data"], BAD_NAMES, strict=False):
                row["filename"] = bad
        reply["count"] = str(len(reply["data"]))
        self.string_counts += 1
        return reply

    def lengths(self, path: str, status: int, size: int) -> str | None:
        """1st file: too long once; 2nd: too short once; 3rd: negative every time."""
        if path not in self.files:
            self.files.append(path)
        self.requests[path] += 1
        which, nth = self.files.index(path), self.requests[path]
        if status not in (200, 206):
            return None
        kind, declared = {(0, 1): ("long", size + 1000),
                          (1, 1): ("short", size - 1000)}.get((which, nth), (None, None))
        if which == 2:
            kind, declared = "negative", -1
        if kind is None:
            return None
        self.sent[kind] += 1
        return str(declared)


def strict(daemon: Daemon, path: str, server_errors: list[str]) -> Any:
    """GET an API path; a 5xx is remembered (then raised) so polling cannot hide it."""
    try:
        return http_json(daemon.api + path)
    except urllib.error.HTTPError as exc:
        if exc.code >= 500:
            server_errors.append(f"{path}: {exc.code}")
        raise


def test_hostile_jsoc_fails_only_the_bad_files(db_url: str, tmp_path: Path) -> None:
    sim, upstream = start_emulator(tmp_path, [EMAIL], "--staging-delay", "0.2",
                                   "--file-size", "32K")
    garbler = Garbler()
    server_errors: list[str] = []
    try:
        with in_thread(HostileJsoc(upstream, garbler.replies, garbler.lengths)) as jsoc:
            daemon = Daemon(tmp_path, jsoc, EMAIL, db_url, [
                *FAST, "--max-chunk-records", "6", "--retry-max-attempts", str(MAX_ATTEMPTS)])
            try:
                daemon.start()
                job = daemon.submit(MAGNETOGRAMS)["id"]
                final = wait_for(lambda: (j := strict(daemon, f"/jobs/{job}", server_errors))[
                    "state"] in TERMINAL and j, 90, "the job to finish", interval=0.3)
                _check_outcome(daemon, job, final, upstream)
                for path in ("/jobs", f"/jobs/{job}", f"/jobs/{job}/files",
                             f"/jobs/{job}/exports", "/workers", "/health"):
                    strict(daemon, path, server_errors)
            finally:
                daemon.stop()
        assert server_errors == []
        _check_garbler(garbler)
        assert_quiet_log(daemon, MAX_LOG_LINES)
        assert_polite(upstream, EMAIL)
    finally:
        sim.stop()


def _check_outcome(daemon: Daemon, job: str, final: dict[str, Any], jsoc: str) -> None:
    """Three bad names and the negative length failed, clearly; every other file verified."""
    assert final["state"] == "completed_with_errors", final
    files = job_files(daemon, job)
    failed = {f["id"]: f["error"] for f in files if f["state"] == "failed"}
    assert len(files) == 11 and len(failed) == 4, [(f["state"], f["error"]) for f in files]
    named = [e for e in failed.values() if e.startswith("JSOC listed")]
    assert len(named) == 3, failed
    assert any("'..'" in e for e in named) and any("NUL" in e for e in named), named
    assert any("too long" in e or "255" in e for e in named), named
    [length] = [e for e in failed.values() if not e.startswith("JSOC listed")]
    assert "malformed response" in length and "Content-Length" in length, length
    done = [f for f in files if f["state"] == "done"]
    assert len(done) == 7
    assert_files_verified(daemon, job, jsoc, r"hmi\.M_720s/.+\.fits", rows=done)
    shown = [e["message"] for e in final["recent_errors"]]
    assert any("malformed exp_status reply" in m for m in shown), shown


def _check_garbler(garbler: Garbler) -> None:
    """Every garbling was really sent: a malformed listing per export, the bad names once,
    each bad length; the negative one exactly as often as --retry-max-attempts allows."""
    assert len(garbler.malformed) == 2 and garbler.renamed_in is not None
    assert garbler.string_counts >= 2
    assert garbler.sent == {"long": 1, "short": 1, "negative": MAX_ATTEMPTS}, garbler.sent
    assert all(garbler.requests[path] >= 2 for path in garbler.files[:2])  # asked again
