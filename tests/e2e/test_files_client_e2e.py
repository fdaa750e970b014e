"""A sunpy user's path through real processes (the emulator and the daemon): a sunpy search
handed to the Python client (and a DRMS record set to its asyncio flavour), files on disk,
``jsoc-bulk files``, the manifest next to the files, ``jsoc-bulk verify`` catching a corrupted
and a deleted file (by job and by directory), ``verify --refetch`` fetching them again, and a
torn manifest line repaired after a SIGKILL."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sunpy.net import attrs as a
from sunpy.net import jsoc

from jsoc_bulk import AsyncClient, Client
from service.cli import main
from tests.e2e.checks import sha256_of
from tests.e2e.procs import EMAIL, Daemon, sim_manifest
from tests.emulators import sunpy_pointed_at

TEMPLATE = "{series}/{T_REC:%Y/%m/%d}/{filename}"


def cli(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    """The console script as a process."""
    return subprocess.run([sys.executable, "-m", "service.cli", *args, "--api-url",
                           f"http://127.0.0.1:{daemon.port}/"], capture_output=True, text=True,
                          timeout=60, check=False)


def run_cli(daemon: Daemon, capsys: pytest.CaptureFixture[str],
            *args: str) -> subprocess.CompletedProcess[str]:
    """The same command in this process (quicker to start; the daemon is still a process)."""
    capsys.readouterr()
    code = main([*args, "--api-url", f"http://127.0.0.1:{daemon.port}/"])
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


def manifest_entries(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_sunpy_search_to_files_manifest_verify_and_refetch(
        stack, capsys: pytest.CaptureFixture[str]) -> None:
    jsoc_url, daemon = stack()
    with sunpy_pointed_at(jsoc_url):
        found = jsoc.JSOCClient().search(
            a.Time("2014-01-01T00:00:00", "2014-01-01T00:50:00"), a.jsoc.Series("hmi.M_720s"),
            a.jsoc.Segment("magnetogram"), a.jsoc.Notify(EMAIL))
    assert len(found) == 5
    client = Client(f"http://127.0.0.1:{daemon.port}/")
    job = client.submit(found, path_template=TEMPLATE)
    files = job.wait(timeout=60, progress=False)
    assert files.errors == [] and job.state == "succeeded"
    root = (daemon.data_dir / "files").resolve()
    day = root / "hmi.M_720s" / "2014" / "01" / "01"
    assert sorted(files) == sorted(str(p) for p in day.glob("*.fits"))
    # exactly sunpy's records (both ends included, as sunpy's a.Time selects them)
    t_recs = sorted(str(t) for t in found["T_REC"])
    fetched = sorted(Path(f).name.split(".")[2] for f in files)
    wanted = [t.replace(".", "").replace(":", "") for t in t_recs]
    assert fetched == wanted, (fetched, wanted)

    listed = json.loads(cli(daemon, "files", job.id, "--json").stdout)
    published = sim_manifest(jsoc_url)
    by_path = {e["path"]: e for e in listed}
    assert sorted(by_path) == sorted(files)
    for entry in listed:
        assert entry["state"] == "done" and entry["error"] is None
        assert entry["sha256"] == sha256_of(Path(entry["path"]))
        assert entry["size"] == Path(entry["path"]).stat().st_size
    assert {e["sha256"] for e in listed} <= {f["sha256"] for f in published.values()}

    table = run_cli(daemon, capsys, "files", job.id, "--csv").stdout.splitlines()
    assert table[0] == "path,record,segment,state,size,sha256,error"
    assert sorted(row.split(",")[0] for row in table[1:]) == sorted(files)
    assert run_cli(daemon, capsys, "files", job.id, "--state", "failed").stdout == \
        "no files in state failed\n"

    manifest = root / "hmi.M_720s" / f"jsoc-bulk-manifest-{job.id}.jsonl"
    lines = manifest_entries(manifest)
    assert sorted(str(manifest.parent / e["path"]) for e in lines) == sorted(files)
    assert sorted(e["T_REC"] for e in lines) == t_recs
    assert all(by_path[str(manifest.parent / e["path"])]["sha256"] == e["sha256"]
               for e in lines)
    watched = run_cli(daemon, capsys, "watch", job.id)
    assert watched.returncode == 0
    assert f"files in {manifest.parent} ({len(files)} done; manifest {manifest.name}" in \
        watched.stdout
    _corrupt_delete_verify_refetch(daemon, capsys, job.id, sorted(files), manifest)


def _corrupt_delete_verify_refetch(daemon: Daemon, capsys: pytest.CaptureFixture[str],
                                   job_id: str, files: list[str], manifest: Path) -> None:
    corrupted, deleted = Path(files[1]), Path(files[3])
    data = bytearray(corrupted.read_bytes())
    data[-100] ^= 0xFF  # same size, different content: only sha256 can tell
    corrupted.write_bytes(bytes(data))
    deleted.unlink()
    for target in (job_id, str(manifest.parent)):
        checked = run_cli(daemon, capsys, "verify", target)
        assert checked.returncode == 1, checked
        named = sorted(line.split(" ")[0].rstrip(":") for line in checked.stdout.splitlines())
        assert named == sorted([str(corrupted), str(deleted)]), checked.stdout
        assert "sha256 is" in checked.stdout and "missing" in checked.stdout

    # SIGKILL, then a torn last manifest line (as a power cut would leave it): the restarted
    # daemon cuts it off before appending the files fetched again.
    assert daemon.proc is not None
    daemon.proc.signal(signal.SIGKILL)
    daemon.proc.wait(timeout=30)
    with manifest.open("a") as fh:
        fh.write('{"record": "hmi.M_720s[2014.01.01_00:5')
    daemon.start()

    retried = run_cli(daemon, capsys, "verify", job_id, "--refetch")
    assert retried.returncode == 1 and "fetch 2 file(s) again" in retried.stderr, retried
    final = daemon.wait_job(job_id, timeout=60)
    assert final["state"] == "succeeded", final
    for target in (job_id, str(manifest.parent)):
        again = run_cli(daemon, capsys, "verify", target)
        assert again.returncode == 0 and again.stdout == "", again
    text = manifest.read_text()
    assert text.endswith("\n") and "00:5\n" not in text
    lines = manifest_entries(manifest)  # every line whole: the torn one was cut
    assert len(lines) == len(files) + 2  # re-fetched files appended; the last line wins
    _async_client_with_a_drms_record_set(daemon)


def _async_client_with_a_drms_record_set(daemon: Daemon) -> None:
    async def run() -> tuple[Any, list[Any]]:
        async with AsyncClient(f"http://127.0.0.1:{daemon.port}/") as client:
            job = await client.submit("hmi.M_720s[2014.01.01_02:00:00_TAI/36m]{magnetogram}")
            files = await job.wait(timeout=60, progress=False)
            return files, [e async for e in job.files()]

    files, entries = asyncio.run(run())
    assert files.errors == [] and len(files) == 3, files
    assert all(Path(f).is_absolute() and Path(f).is_file() for f in files)
    assert sorted(e.path for e in entries) == sorted(files)
    assert all(e.state == "done" and e.sha256 == sha256_of(Path(e.path)) for e in entries)
