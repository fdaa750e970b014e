"""What every end-to-end run must show: files verified against the emulator, JSOC politeness."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.e2e.procs import Daemon, http_json, sim_manifest, sim_stats

# a four-hour hmi.M_720s magnetogram job and the file paths its template gives
MAGNETOGRAMS = {
    "series": "hmi.M_720s", "start": "2014-01-01T00:00:00Z", "end": "2014-01-01T04:00:00Z",
    "segments": ["magnetogram"], "protocol": "fits",
    "path_template": "{series}/{T_REC:%Y/%m/%d}/{filename}",
}
TEMPLATE_PATTERN = r"hmi\.M_720s/2014/01/01/hmi\.m_720s\.\d{8}_\d{6}_TAI\.\d\.magnetogram\.fits"


def job_files(daemon: Daemon, job_id: str) -> list[dict[str, Any]]:
    """Every file row of a job, following the API's pagination."""
    items: list[dict[str, Any]] = []
    offset: int | None = 0
    while offset is not None:
        page = http_json(f"{daemon.api}/jobs/{job_id}/files?limit=500&offset={offset}")
        items += page["items"]
        offset = page["next_offset"]
    return items


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def assert_files_verified(daemon: Daemon, job_id: str, jsoc_url: str,
                          dest_pattern: str | None = None,
                          rows: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Every file of the job (or only ``rows`` of it) is done, on disk where the template
    says, with the emulator's published size and sha256; returns the file rows."""
    files = job_files(daemon, job_id) if rows is None else rows
    assert files, "the job listed no files"
    manifest = sim_manifest(jsoc_url)
    root = daemon.data_dir / "files"
    for row in files:
        assert row["state"] == "done", row
        published = manifest[urlsplit(row["url"]).path]
        on_disk = root / row["dest_path"]
        assert on_disk.is_file(), f"missing {on_disk}"
        assert on_disk.stat().st_size == published["size"], row
        assert sha256_of(on_disk) == published["sha256"], row
        if dest_pattern:
            assert re.fullmatch(dest_pattern, row["dest_path"]), row["dest_path"]
    assert not list(root.rglob("*.part")), "a .part file was left behind"
    return files


def assert_polite(jsoc_url: str, email: str) -> dict[str, Any]:
    """Never two pending exports for the email, never two download connections at once."""
    stats = sim_stats(jsoc_url)
    mail = stats["emails"].get(email, {})
    assert mail.get("peak_pending_exports", 0) <= 1, mail
    for ip, client in stats["clients"].items():
        assert client["peak_concurrent_downloads"] <= 1, (ip, client)
        assert client["refused_connections"] == 0, (ip, client)
    return stats


ERROR_LINE = re.compile(r"\S+ \S+ (ERROR|CRITICAL) ")  # the text log format: date time level


def assert_quiet_log(daemon: Daemon, max_lines: int | None = None) -> str:
    """No error storm in the daemon's log: no ERROR line, no traceback (and, with
    ``max_lines``, fewer lines than that in all); returns the log."""
    assert daemon.proc is not None
    log = daemon.proc.log()
    lines = log.splitlines()
    assert [line for line in lines if ERROR_LINE.match(line)] == [], log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    assert max_lines is None or len(lines) < max_lines, log[-3000:]
    return log
