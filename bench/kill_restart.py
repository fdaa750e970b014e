"""A daemon SIGKILLed every N seconds keeps making progress in every interval.

One emulator and one job of many small AIA files (bandwidth-limited so the job outlasts several
kills). The daemon (SQLite, default 60 s leases) is started, SIGKILLed every ``--every``
seconds and started again at once on the same data directory, ``--kills`` times; then the job
runs to the end. For each interval the table shows the files done at its start and end: a
restart that waited for its own dead leases to expire would show intervals with no progress.
At the end: the job's state, the files the emulator sent in full more than once, and the bytes
it sent again (what the kills cost).

    python -m bench.kill_restart                      # 4 kills, every 15 s
    python -m bench.kill_restart --kills 6 --every 10
"""

from __future__ import annotations

import argparse
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._e2e_sim import Sim, daemon, emulator, http_json
from bench._procs import run_cli

SPEC = {"series": "aia.lev1_euv_12s", "start": "2014-01-01T00:00:00Z",
        "end": "2014-01-01T06:00:00Z", "wavelengths": [171], "segments": ["image"],
        "protocol": "as-is", "path_template": "{series}/{filename}"}  # 1,800 files


def done(api: str, job_id: str) -> tuple[int, str]:
    job = http_json(f"{api}/jobs/{job_id}")
    return int(job["files"].get("done", 0)), str(job["state"])


def run(args: argparse.Namespace, tmp: Path) -> None:
    with emulator(tmp, ["--file-size", "64K", "--staging-delay", "1",
                        "--bandwidth", args.bandwidth]) as sim:
        rows, job_id = [], ""
        for life in range(args.kills + 1):
            with daemon(tmp, sim.url, []) as d:
                if not job_id:
                    job_id = http_json(d.api + "/jobs", SPEC)["id"]
                start, _ = done(d.api, job_id)
                if life < args.kills:
                    time.sleep(args.every)
                    end, _ = done(d.api, job_id)
                    d.proc.send_signal(signal.SIGKILL)
                    d.proc.wait(10)
                    rows.append((life + 1, start, end))
                    continue
                end, state = finish(d.api, job_id, args.timeout)
                rows.append((life + 1, start, end))
        report(rows, state, sim, args)


def finish(api: str, job_id: str, timeout: float) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    while True:
        count, state = done(api, job_id)
        if state not in ("queued", "running") or time.monotonic() > deadline:
            return count, state
        time.sleep(0.5)


def report(rows: list[tuple[int, int, int]], state: str, sim: Sim,
           args: argparse.Namespace) -> None:
    stats: dict[str, Any] = sim.stats()
    files = stats["files"].values()
    twice = sum(1 for f in files if f["full_downloads"] > 1)
    print(f"\nSIGKILL every {args.every:g} s, {args.kills} times; 60 s leases; "
          f"{args.bandwidth}/s per download\n")
    print("| life of the daemon | files done at start | at end | progress |\n|---:|---:|---:|---:|")
    for life, start, end in rows:
        last = " (ran to the end)" if life == len(rows) else ""
        print(f"| {life}{last} | {start} | {end} | {end - start} |")
    again = sum(f["bytes_served_again"] for f in files)
    print(f"\njob {state}; files sent in full more than once: {twice}; bytes sent again: "
          f"{again:,}; politeness violations: {stats['violations']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=4)
    parser.add_argument("--every", type=float, default=15.0)
    parser.add_argument("--bandwidth", default="1M", help="emulator --bandwidth per download")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv if argv is not None else [])
    with tempfile.TemporaryDirectory(prefix="jsoc-bulk-kill-") as tmp:
        run(args, Path(tmp))


if __name__ == "__main__":
    import sys

    run_cli(lambda: main(sys.argv[1:]))
