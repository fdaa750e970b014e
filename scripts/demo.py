"""``make demo``: emulator and daemon as real processes, two jobs, files opened with astropy.

Everything runs on 127.0.0.1 in a temporary directory (kept with ``--keep``), so the demo needs
no JSOC account and no network.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

EMAIL = "demo@example.org"
JOBS = [
    ["--series", "hmi.M_720s", "--start", "2014-01-01T00:00:00Z", "--end", "2014-01-01T02:00:00Z",
     "--segments", "magnetogram", "--path-template", "{series}/{T_REC:%Y/%m/%d}/{filename}"],
    ["--series", "aia.lev1_euv_12s", "--start", "2014-01-01T00:00:00Z",
     "--end", "2014-01-01T00:10:00Z", "--wavelengths", "171,193", "--where", "EXPTIME > 1.0",
     "--segments", "image", "--path-template", "{series}/{WAVELNTH}/{filename}"],
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check, timeout: float, what: str) -> object:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if value := check():
                return value
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"demo: timed out waiting for {what}")


@contextmanager
def process(args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child process logging to ``log``; stopped with SIGTERM (then SIGKILL) on exit."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def emulator_url(log: Path) -> str | None:
    match = re.search(r"(http://127\.0\.0\.1:\d+/)", log.read_text(errors="replace"))
    return match.group(1) if match else None


def api_healthy(api: str) -> bool:
    with urllib.request.urlopen(api + "health", timeout=5) as response:
        return json.load(response).get("status") == "ok"


def show_files(download_dir: Path) -> Path | None:
    files = sorted(p for p in download_dir.rglob("*") if p.is_file())
    print(f"\n{len(files)} files under {download_dir}:")
    for path in files[:8]:
        print(f"  {path.relative_to(download_dir)}  ({path.stat().st_size:,} bytes)")
    if len(files) > 8:
        print(f"  … and {len(files) - 8} more")
    return next((p for p in files if p.suffix == ".fits"), None)


def open_with_astropy(path: Path) -> None:
    from astropy.io import fits

    print(f"\nopening {path.name} with astropy:")
    with fits.open(path) as hdus:
        hdus.info()
        hdu = next(h for h in hdus if h.data is not None)
        for key in ("T_REC", "TELESCOP", "INSTRUME", "WAVELNTH", "EXPTIME", "CAR_ROT", "QUALITY"):
            if key in hdu.header:
                print(f"  {key:9s} = {hdu.header[key]}")
        print(f"  data: {hdu.data.shape} {hdu.data.dtype}, mean {float(hdu.data.mean()):.2f}")


def run(workdir: Path) -> None:
    py = sys.executable
    sim_log, daemon_log = workdir / "jsocsim.log", workdir / "daemon.log"
    print(f"demo directory: {workdir}")
    with process([py, "-m", "jsocsim", "--port", "0", "--data-dir", str(workdir / "jsocsim"),
                  "--email", EMAIL, "--staging-delay", "2", "--file-size", "256K"], sim_log):
        jsoc = wait_until(lambda: emulator_url(sim_log), 60, "the emulator")
        print(f"JSOC emulator at {jsoc}")
        port = free_port()
        api = f"http://127.0.0.1:{port}/api/v1/"
        common = ["--port", str(port), "--data-dir", str(workdir / "data")]
        with process([py, "-m", "service.cli", "serve", *common, "--jsoc-url", str(jsoc),
                      "--email", EMAIL, "--poll-min", "1"], daemon_log):
            wait_until(lambda: api_healthy(api), 60, "the daemon")
            print(f"jsoc-bulk daemon at {api} (SQLite in {workdir / 'data'}); "
                  f"dashboard at http://127.0.0.1:{port}/\n")
            for job in JOBS:
                print("$ jsoc-bulk submit " + " ".join(job) + " --wait")
                done = subprocess.run([py, "-m", "service.cli", "submit", *common, *job, "--wait"])
                if done.returncode != 0:
                    print(daemon_log.read_text(errors="replace")[-3000:])
                    raise SystemExit(f"demo: the job did not succeed (exit {done.returncode})")
            subprocess.run([py, "-m", "service.cli", "jobs", *common], check=True)
    first = show_files(workdir / "data" / "files")
    if first is None:
        raise SystemExit("demo: no FITS file was downloaded")
    open_with_astropy(first)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the demo directory")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="jsoc-bulk-demo-"))
    try:
        run(workdir)
    finally:
        if args.keep:
            print(f"\nkept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
