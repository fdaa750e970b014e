"""Downloader throughput and CPU cost vs curl, both over one keep-alive connection on 127.0.0.1.

Serves N files of S MiB from a separate server process (jsocsim's file server with
`--server jsocsim`, else a plain aiohttp static server), fetches them all with
`service.download.fetch_file` (sequentially, one connection) and with one `curl` invocation
(`-o` per URL, which reuses the connection), and prints throughput, the ratio, and CPU seconds
per GB (getrusage of this process vs of the curl child). Usage:
`python -m bench.download_vs_curl [--files 20] [--size-mb 30] [--rounds 3] [--modes thread,inline]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench._procs import free_port, run_cli, stop_process
from service.download import fetch_file
from service.download.verify import sha256_file

MiB = 1 << 20
MAX_TOTAL_MB = 4096  # keeps the bench bounded on a small machine

STATIC_SERVER = """
import sys
from aiohttp import web
app = web.Application()
app.router.add_static("/SUM1/", sys.argv[1])
async def announce(app):
    print("ready", flush=True)
app.on_startup.append(announce)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), access_log=None, print=None)
"""


@dataclass
class Run:
    tool: str
    seconds: float
    cpu_seconds: float
    nbytes: int

    @property
    def mb_per_s(self) -> float:
        return self.nbytes / MiB / self.seconds

    @property
    def cpu_per_gb(self) -> float:
        return self.cpu_seconds / (self.nbytes / (1 << 30))


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def make_files(root: Path, count: int, size_mb: int) -> list[str]:
    """`count` files of pseudo-random bytes (incompressible), returned as names."""
    block = os.urandom(MiB)
    names = []
    for i in range(count):
        name = f"file{i:03d}.bin"
        with open(root / name, "wb") as fh:
            for j in range(size_mb):
                fh.write(block[j % 7:] + block[: j % 7])  # cheap variation per MiB
        names.append(name)
    return names


def start_static_server(root: Path) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", STATIC_SERVER, str(root), str(port)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise RuntimeError("static file server did not start")
    return proc, f"http://127.0.0.1:{port}/SUM1/"


async def run_ours(urls: list[str], out: Path, mode: str, chunk: int, full: bool) -> Run:
    """Sequential fetch_file over one keep-alive connection; CPU of this process. `full`:
    the service's settings (sha256 while streaming, fsync before rename); otherwise neither,
    which is the work curl does."""
    connector = aiohttp.TCPConnector(limit=1, limit_per_host=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        cpu0, t0 = _cpu(resource.RUSAGE_SELF), time.perf_counter()
        total = 0
        for url in urls:
            result = await fetch_file(session, url, out / url.rsplit("/", 1)[-1],
                                      write_mode=mode, chunk_size=chunk, compute_sha256=full,
                                      durable=full)
            total += result.size
        seconds = time.perf_counter() - t0
    label = f"jsoc-bulk ({mode}{'' if full else ', bare'})"
    return Run(label, seconds, _cpu(resource.RUSAGE_SELF) - cpu0, total)


def run_curl(urls: list[str], out: Path) -> Run:
    """One curl process, `-o` per URL (one reused connection); CPU of the child."""
    args = ["curl", "--silent", "--show-error", "--fail", "--http1.1"]
    for url in urls:
        args += ["-o", str(out / url.rsplit("/", 1)[-1]), url]
    cpu0, t0 = _cpu(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run(args, check=True)
    seconds = time.perf_counter() - t0
    total = sum(p.stat().st_size for p in out.iterdir())
    return Run("curl", seconds, _cpu(resource.RUSAGE_CHILDREN) - cpu0, total)


def run_curl_durable(urls: list[str], out: Path) -> Run:
    """curl, then what the service does on top: sha256 each file and fsync it (and its
    directory) so it survives a crash — the like-for-like baseline for the full path."""
    cpu0 = _cpu(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    plain = run_curl(urls, out)
    for path in sorted(out.iterdir()):
        sha256_file(path)
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    dir_fd = os.open(out, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    cpu = plain.cpu_seconds + _cpu(resource.RUSAGE_SELF) - cpu0
    return Run("curl + sha256 + fsync", time.perf_counter() - t0, cpu, plain.nbytes)


def _fresh(out: Path) -> Path:
    """An empty output directory, with earlier writes flushed so no run pays for another's
    writeback."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    os.sync()
    return out


def report(runs: dict[str, list[Run]]) -> None:
    curl = max(runs["curl"], key=lambda r: r.mb_per_s)
    print(f"{'tool':24} {'MB/s (best)':>12} {'MB/s (median)':>14} {'CPU s/GB':>9} {'vs curl':>8}")
    for tool, results in runs.items():
        best = max(results, key=lambda r: r.mb_per_s)
        median = statistics.median(r.mb_per_s for r in results)
        print(f"{tool:24} {best.mb_per_s:12.1f} {median:14.1f} {best.cpu_per_gb:9.2f} "
              f"{best.mb_per_s / curl.mb_per_s:8.2f}")
    print("(ratio = best throughput / curl's best; aim >= 0.90. jsoc-bulk computes sha256 while "
          "streaming and fsyncs each file before renaming it; 'bare' does neither, like curl;\n"
          " 'curl + sha256 + fsync' is curl followed by that same work: the like-for-like "
          "baseline for the full path, which on most disks is bound by fsync)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.download_vs_curl",
                                     description="downloader vs curl on 127.0.0.1")
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--size-mb", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chunk-kb", type=int, default=1024)
    parser.add_argument("--modes", default="thread,inline",
                        help="comma-separated write modes of fetch_file to measure")
    args = parser.parse_args(argv)
    if args.files * args.size_mb > MAX_TOTAL_MB or args.files < 1 or args.size_mb < 1:
        parser.error(f"files x size-mb must be between 1 and {MAX_TOTAL_MB} MB")
    if shutil.which("curl") is None:
        print("curl is not installed; nothing to compare with", file=sys.stderr)
        return
    with tempfile.TemporaryDirectory(prefix="bench-dl-") as tmp:
        root = Path(tmp)
        (root / "src").mkdir()
        names = make_files(root / "src", args.files, args.size_mb)
        server, base = start_static_server(root / "src")
        try:
            urls = [base + name for name in names]
            print(f"{args.files} files x {args.size_mb} MiB from {base} (one connection)")
            runs: dict[str, list[Run]] = {"curl": []}
            for _ in range(args.rounds):
                runs["curl"].append(run_curl(urls, _fresh(root / "out")))
                durable = run_curl_durable(urls, _fresh(root / "out"))
                runs.setdefault(durable.tool, []).append(durable)
                for mode in args.modes.split(","):
                    for full in (True, False):
                        run = asyncio.run(run_ours(urls, _fresh(root / "out"), mode,
                                                   args.chunk_kb * 1024, full))
                        runs.setdefault(run.tool, []).append(run)
            report(runs)
        finally:
            stop_process(server)


if __name__ == "__main__":
    run_cli(main)
