"""Does API traffic starve downloads? One job downloaded by a fresh daemon (SQLite) quietly
and while ``--clients`` concurrent loops poll ``GET /jobs/{id}`` as fast as the daemon
answers, ``--rounds`` times (quiet and loaded alternate which goes first, so a machine getting
busier or quieter does not favour one side). Prints each run's rate, the daemon's CPU
seconds, this process's CPU seconds (the status loops') and the status calls served, each
round's loaded/quiet ratio and their median (issue 11, point 10: the aim is a drop of at
most 20 %).

    python -m bench.status_load                     # 300 files of 256 KB, 50 loops, 3 rounds
    python -m bench.status_load --clients 50 --files 1200 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench._e2e_sim import Sim, daemon, emulator, http_json
from bench._e2e_tools import recorded_seconds
from bench._procs import run_cli

STEP_SECONDS = 12  # aia.lev1_euv_12s: one file per 12 s for one wavelength


@dataclass
class Run:
    seconds: float
    bytes_done: int
    status_calls: int
    cpu_seconds: float  # the daemon's, from POST /jobs to succeeded
    client_cpu_seconds: float  # this process's (the status loops, mostly) meanwhile
    sim_cpu_seconds: float  # the emulator's meanwhile (it stands in for JSOC's machines)

    @property
    def rate(self) -> float:
        return self.bytes_done / self.seconds


def spec(files: int) -> dict[str, object]:
    minutes, seconds = divmod(files * STEP_SECONDS, 60)
    hours, minutes = divmod(minutes, 60)
    return {"series": "aia.lev1_euv_12s", "start": "2014-01-01T00:00:00Z",
            "end": f"2014-01-01T{hours:02d}:{minutes:02d}:{seconds:02d}Z",
            "wavelengths": [171], "segments": ["image"], "protocol": "as-is",
            "method": "url_quick", "path_template": "{series}/{filename}"}


class StatusLoad:
    """``clients`` loops of GET /jobs/{id} in a thread of their own, until stopped."""

    def __init__(self, url: str, clients: int) -> None:
        self.url, self.clients, self.calls = url, clients, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()))

    def __enter__(self) -> StatusLoad:
        if self.clients:
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self.clients:
            self._thread.join()

    async def _main(self) -> None:
        async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.clients)) as session:
            await asyncio.gather(*(self._loop(session) for _ in range(self.clients)))

    async def _loop(self, session: aiohttp.ClientSession) -> None:
        while not self._stop.is_set():
            async with session.get(self.url) as resp:
                await resp.read()
            self.calls += 1


def one_run(tmp: Path, sim: Sim, files: int, clients: int, timeout: float) -> Run:
    with daemon(tmp, sim.url, []) as d:
        started, cpu_before, own_before = time.perf_counter(), d.cpu_seconds(), time.process_time()
        posted_at = time.time()
        sim_before = sim.cpu_seconds()
        job = http_json(d.api + "/jobs", spec(files))
        with StatusLoad(f"{d.api}/jobs/{job['id']}", clients) as load:
            deadline = time.monotonic() + timeout
            while True:
                status = http_json(f"{d.api}/jobs/{job['id']}")
                if status["state"] not in ("queued", "running"):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"job not done after {timeout}s: {status['files']}")
                time.sleep(0.1)
        seconds = recorded_seconds(status, posted_at, time.perf_counter() - started)
        cpu = d.cpu_seconds() - cpu_before
        own, sim_cpu = time.process_time() - own_before, sim.cpu_seconds() - sim_before
        if status["state"] != "succeeded":
            raise RuntimeError(f"job ended {status['state']}: {status.get('recent_errors')}")
        return Run(seconds, int(status["bytes_done"]), load.calls, cpu, own, sim_cpu)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--file-size", default="256K", help="emulator --file-size")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3, help="quiet + loaded pairs")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv if argv is not None else [])
    print(f"\n{args.files} files of {args.file_size}, one daemon (SQLite) per run, "
          f"{args.clients} status loops\n")
    print("| round | run | seconds | MB/s | daemon CPU s | client CPU s | emulator CPU s "
          "| status calls served |\n|---:|---|---:|---:|---:|---:|---:|---:|")
    ratios = []
    with (tempfile.TemporaryDirectory(prefix="jsoc-bulk-status-") as tmp,
          emulator(Path(tmp), ["--file-size", args.file_size, "--staging-delay", "0.2"]) as sim):
        # the first run makes the emulator generate the files: a warm-up, not measured
        (Path(tmp) / "warm-up").mkdir()
        one_run(Path(tmp) / "warm-up", sim, args.files, 0, args.timeout)
        for n in range(1, args.rounds + 1):
            order = [("quiet", 0), ("loaded", args.clients)]
            runs = {}
            for name, clients in order if n % 2 else order[::-1]:
                (Path(tmp) / f"{name}-{n}").mkdir()
                runs[name] = one_run(Path(tmp) / f"{name}-{n}", sim, args.files, clients,
                                     args.timeout)
            for name, run in runs.items():
                print(f"| {n} | {name} | {run.seconds:.2f} | {run.rate / 1e6:.2f} | "
                      f"{run.cpu_seconds:.1f} | {run.client_cpu_seconds:.1f} | "
                      f"{run.sim_cpu_seconds:.1f} | {run.status_calls} |", flush=True)
            ratios.append(runs["loaded"].rate / runs["quiet"].rate)
    print("\nrate under load / quiet rate by round: "
          + ", ".join(f"{r:.2f}" for r in ratios))
    median = statistics.median(ratios)
    print(f"median: {median:.2f} (drop {100 * (1 - median):.0f} %)")


if __name__ == "__main__":
    import sys

    run_cli(lambda: main(sys.argv[1:]))
