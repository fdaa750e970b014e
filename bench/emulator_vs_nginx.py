"""Does the emulator bias download benchmarks? Its file throughput beside nginx's, same files.

Starts `python -m jsocsim` as a subprocess, has it generate a few aia.lev1_euv_12s image files
(GET of the SUMS paths rs_list lists), then starts nginx with its root at the emulator's
`<data-dir>/sums`, so both servers serve the very same files at the very same URL paths. Each
round fetches the file list (`--repeat` times over) from each server over ONE keep-alive
connection, with curl (`-o /dev/null` per URL) and with an aiohttp client (body read and
discarded). Prints the median MiB/s per server and client, the ratio emulator/nginx (aim:
>= 0.8) and each server's CPU seconds per GiB. Exits 0 with a message if nginx is missing.
Usage: `python -m bench.emulator_vs_nginx [--files 4] [--file-size 64M] [--repeat 5] [--rounds 5]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import aiohttp

from bench._procs import run_cli, stop_process
from bench.nginx import INSTALL_HINT, NginxServer, nginx_binary
from jsocsim.__main__ import parse_size

MiB = 1 << 20
EMAIL = "bench@example.org"
SERIES_QUERY = "aia.lev1_euv_12s[2014-01-01T00:00:00Z/1h]"
START_TIMEOUT = 30.0  # seconds for the emulator to print its URL
TARGET_RATIO = 0.8
CLK_TCK = os.sysconf("SC_CLK_TCK")


class EmulatorProcess:
    """`python -m jsocsim` as a child process on a free 127.0.0.1 port (a context manager)."""

    def __init__(self, data_dir: Path, file_size: str = "64K", *extra: str) -> None:
        self.data_dir = Path(data_dir)
        self.args = [sys.executable, "-m", "jsocsim", "--host", "127.0.0.1", "--port", "0",
                     "--data-dir", str(self.data_dir), "--email", EMAIL,
                     "--file-size", file_size, *extra]
        self.process: subprocess.Popen[str] | None = None
        self.base_url = ""

    def start(self) -> str:
        """Start the emulator and wait for its `listening on URL` line; returns the URL."""
        self.process = subprocess.Popen(self.args, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, text=True,
                                        start_new_session=True)  # Ctrl-C: stop() ends it
        try:
            line = self._first_line()
        except BaseException:  # including Ctrl-C: never leave the emulator running
            self.stop()
            raise
        if " listening on " not in line:
            self.stop()
            raise RuntimeError(f"jsocsim did not start within {START_TIMEOUT:.0f}s: {line!r}")
        self.base_url = line.rsplit(" ", 1)[-1]
        return self.base_url

    def _first_line(self) -> str:
        assert self.process is not None and self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], START_TIMEOUT)
        return self.process.stdout.readline().strip() if ready else ""

    def stop(self) -> None:
        """SIGTERM (the emulator exits cleanly), SIGKILL if it does not within 10 s."""
        process, self.process = self.process, None
        if process is None:
            return
        stop_process(process)
        if process.stdout is not None:
            process.stdout.close()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def __enter__(self) -> EmulatorProcess:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def cpu_seconds(pid: int) -> float:
    """utime + stime of process `pid` (Linux /proc), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


async def stage_files(base_url: str, count: int) -> list[str]:
    """SUMS paths of `count` image files, each fetched once so the emulator writes it."""
    params = {"op": "rs_list", "ds": SERIES_QUERY, "seg": "image", "n": str(count)}
    async with aiohttp.ClientSession() as session:
        async with session.get(base_url + "cgi-bin/ajax/jsoc_info", params=params) as resp:
            reply = await resp.json(content_type=None)
        if reply.get("status") != 0:
            raise RuntimeError(f"rs_list failed: {reply}")
        paths = [p for p in reply["segments"][0]["values"] if p.startswith("/SUM")][:count]
        for path in paths:
            async with session.get(base_url.rstrip("/") + path) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"emulator answered {resp.status} for {path}")
                await resp.read()
    return paths


@dataclass
class Fetch:
    """One batch download: bytes received, wall seconds, TCP connections opened."""

    nbytes: int
    seconds: float
    connections: int

    @property
    def mib_per_s(self) -> float:
        return self.nbytes / MiB / self.seconds


def fetch_with_curl(urls: list[str]) -> Fetch:
    """One curl process, `-o /dev/null` per URL (curl reuses its one connection)."""
    args = ["curl", "--silent", "--show-error", "--fail", "--http1.1",
            "--write-out", "%{size_download} %{num_connects}\n"]
    for url in urls:
        args += ["-o", os.devnull, url]
    start = time.perf_counter()
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    seconds = time.perf_counter() - start
    rows = [tuple(map(int, line.split())) for line in out.splitlines() if line.strip()]
    return Fetch(sum(r[0] for r in rows), seconds, sum(r[1] for r in rows))


async def fetch_with_aiohttp(urls: list[str]) -> Fetch:
    """A fresh aiohttp session limited to one connection; bodies read and discarded."""
    connections = 0

    async def on_connect(*_: object) -> None:
        nonlocal connections
        connections += 1

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(on_connect)
    connector = aiohttp.TCPConnector(limit=1)
    nbytes = 0
    start = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector, trace_configs=[trace]) as session:
        for url in urls:
            async with session.get(url) as resp:
                resp.raise_for_status()
                while chunk := await resp.content.readany():
                    nbytes += len(chunk)
    return Fetch(nbytes, time.perf_counter() - start, connections)


def fetch(client: str, urls: list[str]) -> Fetch:
    """Download `urls` with `client` ("curl" or "aiohttp")."""
    if client == "curl":
        return fetch_with_curl(urls)
    return asyncio.run(fetch_with_aiohttp(urls))


@dataclass
class Series:
    """Every round's result for one (client, server) pair, plus the server's CPU time."""

    fetches: list[Fetch]
    server_cpu: float = 0.0

    @property
    def median(self) -> float:
        return statistics.median(f.mib_per_s for f in self.fetches)

    @property
    def cpu_per_gib(self) -> float:
        return self.server_cpu / (sum(f.nbytes for f in self.fetches) / (1 << 30))


def measure(servers: dict[str, tuple[str, int]], paths: list[str], clients: list[str],
            repeat: int, rounds: int) -> dict[tuple[str, str], Series]:
    """Interleaved rounds: every client against every server (name -> (base URL, pid))."""
    results: dict[tuple[str, str], Series] = {}
    for _ in range(rounds):
        for client in clients:
            sizes = set()
            for name, (base, pid) in servers.items():
                urls = [base.rstrip("/") + p for p in paths] * repeat
                cpu0 = cpu_seconds(pid)
                result = fetch(client, urls)
                series = results.setdefault((client, name), Series([]))
                series.server_cpu += cpu_seconds(pid) - cpu0
                series.fetches.append(result)
                sizes.add(result.nbytes)
                if result.connections != 1:
                    print(f"warning: {client} opened {result.connections} connections to {name}")
            if len(sizes) != 1:
                raise RuntimeError(f"servers sent different byte counts: {sorted(sizes)}")
    return results


def report(results: dict[tuple[str, str], Series], clients: list[str]) -> list[float]:
    """Print the table; returns the emulator/nginx ratio per client."""
    print(f"{'client':8} {'server':9} {'MiB/s (median)':>15} {'min':>8} {'max':>8} "
          f"{'server CPU s/GiB':>17}")
    ratios = []
    for client in clients:
        for server in ("jsocsim", "nginx"):
            series = results[(client, server)]
            speeds = [f.mib_per_s for f in series.fetches]
            print(f"{client:8} {server:9} {series.median:15.0f} {min(speeds):8.0f} "
                  f"{max(speeds):8.0f} {series.cpu_per_gib:17.2f}")
        ratio = results[(client, "jsocsim")].median / results[(client, "nginx")].median
        ratios.append(ratio)
        verdict = "ok" if ratio >= TARGET_RATIO else f"BELOW {TARGET_RATIO}"
        print(f"{client:8} ratio jsocsim/nginx = {ratio:.2f} ({verdict})")
    return ratios


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.emulator_vs_nginx",
                                     description="jsocsim file throughput vs nginx, same files")
    parser.add_argument("--files", type=int, default=4, help="distinct files (default 4)")
    parser.add_argument("--file-size", type=parse_size, default="64M",
                        help="jsocsim --file-size (image bytes before Rice compression; "
                             "64M gives ~25 MB files)")
    parser.add_argument("--repeat", type=int, default=5,
                        help="times the file list is fetched per batch (default 5)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--clients", default="curl,aiohttp",
                        help="comma-separated: curl, aiohttp (default both)")
    args = parser.parse_args(argv)
    args.clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    bad = sorted(set(args.clients) - {"curl", "aiohttp"})
    if bad or not args.clients:
        parser.error(f"--clients takes curl and/or aiohttp, got {bad or 'nothing'}")
    if not 1 <= args.files <= 20 or not 1 <= args.repeat <= 50 or not 1 <= args.rounds <= 20:
        parser.error("--files must be 1..20, --repeat 1..50, --rounds 1..20")
    if not MiB <= args.file_size <= 256 * MiB:
        parser.error(f"--file-size must be 1M..256M, got {args.file_size} bytes")
    return args


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print the table (returns early if nginx is not installed)."""
    args = parse_args(argv)
    if nginx_binary() is None:
        print(f"nginx is not installed: skipping the emulator-vs-nginx benchmark; {INSTALL_HINT}")
        return
    if "curl" in args.clients and shutil.which("curl") is None:
        print("curl is not installed: measuring with aiohttp only")
        args.clients.remove("curl")
        if not args.clients:
            return
    with tempfile.TemporaryDirectory(prefix="bench-emu-") as tmp:
        data_dir = Path(tmp) / "jsocsim"
        with EmulatorProcess(data_dir, str(args.file_size)) as emulator:
            began = time.perf_counter()
            paths = asyncio.run(stage_files(emulator.base_url, args.files))
            sizes = [(data_dir / "sums" / p.lstrip("/")).stat().st_size for p in paths]
            print(f"jsocsim generated {len(paths)} files ({sum(sizes) / MiB:.0f} MiB) in "
                  f"{time.perf_counter() - began:.1f}s; each batch fetches them {args.repeat}x "
                  f"({sum(sizes) * args.repeat / MiB:.0f} MiB) over one connection")
            with NginxServer(data_dir / "sums") as nginx:
                servers = {"jsocsim": (emulator.base_url, emulator.pid),
                           "nginx": (nginx.base_url, nginx.pid)}
                results = measure(servers, paths, args.clients, args.repeat, args.rounds)
        report(results, args.clients)


if __name__ == "__main__":
    run_cli(main)
