"""Real processes for end-to-end tests: the emulator and the daemon, started, killed, restarted."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

URL_LINE = re.compile(r"(http://127\.0\.0\.1:\d+/)")
WORKER_STARTED = re.compile(r"worker (\S+) started")
ROLE_FLAGS = {"all": [], "api": ["--api-only"], "workers": ["--workers-only"]}
EMAIL = "e2e@example.org"  # the address the emulator processes register
# daemon flags for quick tests: short polls, retries, leases and heartbeats
FAST = ["--poll-min", "0.2", "--poll-max", "2", "--retry-base", "0.2", "--retry-cap", "2",
        "--shutdown-grace-seconds", "5", "--lease-seconds", "10", "--heartbeat-seconds", "1"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``check`` until it returns a truthy value; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # keep polling; report the last error on timeout
            last_error = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last error: {last_error})")


def http_json(url: str, method: str = "GET", body: Any = None, token: str | None = None) -> Any:
    """One JSON request over loopback; returns the decoded body (raises on HTTP errors)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


@dataclass
class Proc:
    """A child process with its log file."""

    args: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            self.args,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            start_new_session=True,
        )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        assert self.popen is not None
        self.popen.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.popen is not None
        return self.popen.wait(timeout=timeout)

    def stop(self) -> None:
        """Terminate (then kill) if still running; never raises."""
        if not self.alive():
            return
        assert self.popen is not None
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=10)


def start_emulator(tmp: Path, emails: list[str], *extra: str) -> tuple[Proc, str]:
    """Start ``python -m jsocsim`` on a free port; return the process and its base URL."""
    email_args = [arg for email in emails for arg in ("--email", email)]
    proc = Proc(
        [sys.executable, "-m", "jsocsim", "--host", "127.0.0.1", "--port", "0",
         "--data-dir", str(tmp / "jsocsim"), *email_args, *extra],
        tmp / "jsocsim.log",
    ).start()
    url = wait_for(lambda: _printed_url(proc), 60, "the emulator to print its URL")
    return proc, url


def _printed_url(proc: Proc) -> str | None:
    if not proc.alive():
        raise RuntimeError(f"emulator exited early:\n{proc.log()}")
    match = URL_LINE.search(proc.log())
    return match.group(1) if match else None


def sim_stats(base_url: str) -> dict[str, Any]:
    return http_json(base_url + "_sim/stats")


def sim_manifest(base_url: str) -> dict[str, Any]:
    return http_json(base_url + "_sim/manifest")


def sim_faults(base_url: str, **faults: Any) -> Any:
    return http_json(base_url + "_sim/faults", "POST", faults)


@dataclass
class Daemon:
    """``jsoc-bulk serve`` as a real process, restartable on the same data dir and port."""

    tmp: Path
    jsoc_url: str
    email: str
    database_url: str | None = None
    extra: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    proc: Proc | None = None
    role: str = "all"  # "all" (API + workers), "api" (--api-only), "workers" (--workers-only)
    name: str = "daemon"  # log file <tmp>/<name>.log
    worker_id: str | None = None  # set by start() for a workers-only process

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    @property
    def data_dir(self) -> Path:
        return self.tmp / "data"

    def start(self, wait: bool = True) -> Daemon:
        """Start the process; with ``wait``, return once it is ready (see ``wait_ready``).

        A workers-only process does not migrate (``--db-upgrade``): like in a deployment, the
        API process (started first) does."""
        if self.role not in ROLE_FLAGS:
            raise ValueError(f"role must be one of {', '.join(ROLE_FLAGS)}; got {self.role!r}")
        upgrade = [] if self.role == "workers" else ["--db-upgrade"]
        args = [sys.executable, "-m", "service.cli", "serve", *ROLE_FLAGS[self.role], *upgrade,
                "--host", "127.0.0.1", "--port", str(self.port),
                "--jsoc-url", self.jsoc_url, "--email", self.email,
                "--data-dir", str(self.data_dir), *self.extra]
        if self.database_url:
            args += ["--database-url", self.database_url]
        self.proc = Proc(args, self.tmp / f"{self.name}.log").start()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        """Wait for /health, or (workers only) for the log line naming the worker id."""
        if self.role == "workers":
            self.worker_id = wait_for(self._worker_started, timeout, f"{self.name} to start")
        else:
            wait_for(self._healthy, timeout, f"{self.name}'s /health")

    def _worker_started(self) -> str | None:
        assert self.proc is not None
        if not self.proc.alive():
            raise RuntimeError(f"{self.name} exited early:\n{self.proc.log()}")
        match = WORKER_STARTED.findall(self.proc.log())
        return match[-1] if match else None

    def _healthy(self) -> bool:
        assert self.proc is not None
        if not self.proc.alive():
            raise RuntimeError(f"daemon exited early:\n{self.proc.log()}")
        try:
            # liveness: "degraded" (JSOC unreachable, e.g. during an injected outage) is up too
            return http_json(self.api + "/health").get("status") in ("ok", "degraded")
        except (urllib.error.URLError, ConnectionError):
            return False

    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        return http_json(self.api + "/jobs", "POST", spec)

    def job(self, job_id: str) -> dict[str, Any]:
        return http_json(f"{self.api}/jobs/{job_id}")

    def wait_job(self, job_id: str, timeout: float, states: tuple[str, ...] = (
            "succeeded", "completed_with_errors", "failed", "cancelled")) -> dict[str, Any]:
        return wait_for(lambda: (j := self.job(job_id))["state"] in states and j, timeout,
                        f"job {job_id} to reach one of {states}", interval=0.3)

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()
