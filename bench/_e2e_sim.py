"""Processes and HTTP plumbing of `bench.e2e`: the emulator, the daemon, their control calls.

Both run as real subprocesses on 127.0.0.1 (their logs go to files in the run's temporary
directory) and are stopped with `bench._procs.stop_process` when their `with` block ends, also
on Ctrl-C. Every wait is bounded and says what it waited for when it gives up.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bench._procs import free_port, stop_process

EMAIL = "bench@example.org"
HOST = "127.0.0.1"
URL_LINE = re.compile(r"(http://127\.0\.0\.1:\d+/)")
START_TIMEOUT = 60.0
T = TypeVar("T")


def wait_for(check: Callable[[], T | None], timeout: float, what: str,
             interval: float = 0.05) -> T:
    """Poll `check` until it returns something truthy; TimeoutError naming `what` after that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def http_json(url: str, body: Any = None, timeout: float = 30.0) -> Any:
    """GET (or POST `body` as JSON) on loopback; the decoded JSON reply."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def start_logged(args: list[str], log: Path) -> subprocess.Popen[str]:
    """A child in its own session (Ctrl-C reaches only us; we stop it), output to `log`."""
    with log.open("a") as handle:
        return subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _tail(log: Path, lines: int = 15) -> str:
    text = log.read_text(errors="replace") if log.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


# ---- what the emulator in this checkout can do -----------------------------------------------

@dataclass(frozen=True)
class SimFeatures:
    """Options of `python -m jsocsim` in this checkout (read from --help and jsocsim.config)."""

    flags: frozenset[str]
    runtime_fields: frozenset[str]  # what POST /_sim/config may change (empty: no such call)

    @property
    def latency(self) -> bool:
        return "--latency" in self.flags

    @property
    def staging_costs(self) -> bool:
        return "--staging-per-record" in self.flags

    def can_set_at_run_time(self, names: Iterable[str]) -> bool:
        return all(name in self.runtime_fields for name in names)


def sim_features() -> SimFeatures:
    """The emulator's CLI flags and run-time options, without starting it."""
    out = subprocess.run([sys.executable, "-m", "jsocsim", "--help"], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    try:
        from jsocsim import config as sim_config

        runtime = frozenset(getattr(sim_config, "RUNTIME_FIELDS", ()))
    except ImportError:
        runtime = frozenset()
    return SimFeatures(frozenset(re.findall(r"--[a-z][a-z0-9-]+", out)), runtime)


# ---- the emulator ----------------------------------------------------------------------------

@dataclass
class Sim:
    """A running `python -m jsocsim` and its control endpoints."""

    url: str
    proc: subprocess.Popen[str]
    log: Path

    def stats(self) -> dict[str, Any]:
        return dict(http_json(self.url + "_sim/stats"))

    def reset(self) -> None:
        http_json(self.url + "_sim/reset", {})

    def configure(self, **changes: Any) -> dict[str, Any]:
        """POST /_sim/config (latency, bandwidth, staging_* while running)."""
        return dict(http_json(self.url + "_sim/config", changes))

    def cgi(self, name: str, **params: Any) -> dict[str, Any]:
        query = urllib.parse.urlencode(params)
        return dict(http_json(f"{self.url}cgi-bin/ajax/{name}?{query}", timeout=120))

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.proc.pid)


@contextmanager
def emulator(tmp: Path, args: list[str]) -> Iterator[Sim]:
    """`python -m jsocsim --port 0 ...` on 127.0.0.1; its URL is read from its log."""
    log = tmp / "jsocsim.log"
    cmd = [sys.executable, "-m", "jsocsim", "--host", HOST, "--port", "0",
           "--data-dir", str(tmp / "jsocsim"), "--email", EMAIL, *args]
    proc = start_logged(cmd, log)
    try:
        def printed() -> str | None:
            if proc.poll() is not None:
                raise RuntimeError(f"the emulator exited early:\n{_tail(log)}")
            match = URL_LINE.search(log.read_text(errors="replace")) if log.exists() else None
            return match.group(1) if match else None

        yield Sim(wait_for(printed, START_TIMEOUT, "the emulator to print its URL"), proc, log)
    finally:
        stop_process(proc)


# ---- the daemon ------------------------------------------------------------------------------

@dataclass
class Daemon:
    """A running `jsoc-bulk serve` (API + workers, SQLite in its data dir)."""

    api: str
    proc: subprocess.Popen[str]
    data_dir: Path
    log: Path

    @property
    def download_dir(self) -> Path:
        return self.data_dir / "files"

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.proc.pid)


def daemon_data_dir(tmp: Path) -> Path:
    """The data dir (database, files) of the daemon `daemon(tmp, ...)` starts."""
    return tmp / "data"


@contextmanager
def daemon(tmp: Path, jsoc_url: str, extra: list[str]) -> Iterator[Daemon]:
    """`jsoc-bulk serve` (as `python -m service.cli serve`) with a fresh data dir in `tmp`
    (unless a database was put there beforehand), yielded once /health says ok."""
    port, data_dir, log = free_port(), daemon_data_dir(tmp), tmp / "daemon.log"
    cmd = [sys.executable, "-m", "service.cli", "serve", "--db-upgrade", "--host", HOST,
           "--port", str(port), "--jsoc-url", jsoc_url, "--email", EMAIL,
           "--data-dir", str(data_dir), *extra]
    proc = start_logged(cmd, log)
    api = f"http://{HOST}:{port}/api/v1"
    try:
        def healthy() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"the daemon exited early:\n{_tail(log)}")
            try:
                return bool(http_json(api + "/health", timeout=5).get("status") == "ok")
            except (OSError, ValueError):
                return False

        wait_for(healthy, START_TIMEOUT, "the daemon's /health", interval=0.1)
        yield Daemon(api, proc, data_dir, log)
    finally:
        stop_process(proc, timeout=20)


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process and its reaped children (/proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


# ---- exports without a client library ----------------------------------------------------------

@dataclass
class Export:
    """A finished export: its file URLs and how long it took to be ready."""

    urls: list[str]
    seconds: float
    requestid: str


def export_urls(sim: Sim, recordset: str, method: str, protocol: str,
                timeout: float = 600.0) -> Export:
    """exp_request, then exp_status every 0.1 s until status 0: the download URLs."""
    t0 = time.perf_counter()
    reply = sim.cgi("jsoc_fetch", op="exp_request", ds=recordset, method=method,
                    protocol=protocol, format="json", notify=EMAIL, requestor="none")
    requestid = str(reply.get("requestid") or "")
    deadline = time.monotonic() + timeout
    while int(reply["status"]) != 0:
        if int(reply["status"]) not in (1, 2, 6) or time.monotonic() > deadline:
            raise RuntimeError(f"export of {recordset} ({method}, {protocol}) failed: "
                               f"{ {k: v for k, v in reply.items() if k != 'data'} }")
        time.sleep(0.1)
        reply = sim.cgi("jsoc_fetch", op="exp_status", requestid=requestid)
    seconds = time.perf_counter() - t0
    folder = str(reply.get("dir") or "")
    if reply.get("tarfile"):
        paths = [str(reply["tarfile"])]
    else:
        paths = [f"{folder}/{row['filename']}" if folder else str(row["filename"])
                 for row in reply["data"]]
    return Export([sim.url + p.lstrip("/") for p in paths], seconds, requestid)


def politeness(stats: dict[str, Any]) -> dict[str, int]:
    """What /_sim/stats says about one tool's run (since the last reset)."""
    clients = stats.get("clients", {}).values()
    emails = stats.get("emails", {}).values()
    return {
        "violations": int(stats.get("violations", 0)),
        "refused": sum(int(c.get("refused_connections", 0)) for c in clients),
        "again": int(stats.get("bytes_served_again", 0)),
        "peak_conn": max((int(c.get("peak_concurrent_downloads", 0)) for c in clients),
                         default=0),
        "exports": sum(int(e.get("exp_requests", 0)) for e in emails),
        "downloads": sum(int(c.get("download_requests", 0)) for c in clients),
    }


def method_seen(stats: dict[str, Any]) -> str:
    """Which export method a run used, from what the emulator served: a .tar file means
    url-tar, a staged export without one means url, no export at all means url_quick."""
    if any(path.endswith(".tar") for path in stats.get("files", {})):
        return "url-tar"
    return "url" if stats.get("exports") else "url_quick"
