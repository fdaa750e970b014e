"""The four contestants of `bench.e2e`, each run once against a running emulator.

- curl: one process, every URL of an export already made (`--config` with a `url`/`output`
  pair per file), one keep-alive connection, no `-Z`: the limit.
- drms / sunpy: a child process (`bench._e2e_clients`) that times export + wait + download
  (drms) or `JSOCClient.fetch` (sunpy, search done before the clock starts).
- jsoc-bulk: a fresh `jsoc-bulk serve` (new SQLite database and data dir) started and healthy
  before the clock starts; timed from just before `POST /api/v1/jobs` to the job's recorded
  `finished_at` (status polled every 50-250 ms over one keep-alive connection).

Every run is preceded by `POST /_sim/reset`, so the emulator's stats afterwards are that run's.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bench._e2e_sim import (
    EMAIL,
    HOST,
    Daemon,
    Sim,
    daemon,
    daemon_data_dir,
    method_seen,
    politeness,
)
from bench._e2e_staging import StagingLink

POLL_INTERVAL = 0.05  # at first; then 1 % of the time waited so far (at most POLL_MAX)
POLL_MAX = 0.25  # status calls cost the daemon CPU too: the time comes from finished_at
FINAL_STATES = ("succeeded", "completed_with_errors", "failed", "cancelled")


@dataclass(frozen=True)
class Selection:
    """The records of a workload, as each tool spells them."""

    series: str
    start: datetime
    seconds: int
    scale: str  # time scale of the series' T_REC: "utc" (AIA) or "tai" (HMI)
    cadence: int  # seconds between the series' time slots
    segment: str
    wavelength: int | None = None

    def _text(self, when: datetime) -> str:
        if self.scale == "utc":
            return when.strftime("%Y-%m-%dT%H:%M:%SZ")
        return when.strftime("%Y.%m.%d_%H:%M:%S_TAI")

    @property
    def recordset(self) -> str:
        """drms / curl: `series[start/Ns][wavelength]{segment}`."""
        wave = f"[{self.wavelength}]" if self.wavelength else ""
        return f"{self.series}[{self._text(self.start)}/{self.seconds}s]{wave}{{{self.segment}}}"

    def spec(self, method: str, protocol: str) -> dict[str, Any]:
        """jsoc-bulk's job spec. Both ends are included (as sunpy's), so it ends at the last
        slot: the same records as `recordset`."""
        spec: dict[str, Any] = {
            "series": self.series, "start": self._text(self.start),
            "end": self._text(self.start + timedelta(seconds=self.seconds - self.cadence)),
            "segments": [self.segment], "protocol": protocol, "method": method}
        if self.wavelength:
            spec["wavelengths"] = [self.wavelength]
        return spec

    def sunpy(self) -> dict[str, Any]:
        """sunpy's a.Time range. Both ends are included and JSOC takes the slot nearest each
        end, so the range ends at the last slot's time, not a second before the next one."""
        end = self.start + timedelta(seconds=self.seconds - self.cadence)
        return {"series": self.series, "start": self.start.isoformat(), "end": end.isoformat(),
                "scale": self.scale, "segment": self.segment, "wavelength": self.wavelength}


@dataclass(frozen=True)
class Tool:
    """One contestant: `kind` is curl, drms, sunpy or jsoc-bulk."""

    name: str
    kind: str
    method: str
    protocol: str
    daemon_args: tuple[str, ...] = ()
    staging: StagingLink | None = field(default=None, compare=False)  # tar ladder's history

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() else "-" for c in self.name)


@dataclass(frozen=True)
class Reference:
    """The files of the workload as curl got them from one export (what every tool must get)."""

    urls: list[str]
    count: int
    nbytes: int
    staging_seconds: float


@dataclass(frozen=True)
class Options:
    timeout: float
    sunpy_sleep: float
    drms_poll: float
    daemon_args: tuple[str, ...]


@dataclass
class Run:
    """One timed run of one tool."""

    tool: str
    seconds: float = math.nan
    cpu: float = math.nan
    files: int = 0
    nbytes: int = 0
    error: str = ""  # the run failed: no time
    mismatch: str = ""  # finished, but its files differ from curl's in count or size
    sim: dict[str, int] = field(default_factory=dict)
    method: str = ""  # what the emulator served: url_quick, url or url-tar
    note: str = ""  # jsoc-bulk auto: the history it started with and its logged choice

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def cpu_per_gb(self) -> float:
        return self.cpu / (self.nbytes / 1e9) if self.nbytes else math.nan


def dir_summary(root: Path) -> tuple[int, int]:
    """Files under `root` (no .part, hidden files or jsoc-bulk manifests) and their size."""
    sizes = [p.stat().st_size for p in root.rglob("*")
             if p.is_file() and not p.name.endswith(".part") and not p.name.startswith(".")
             and not p.name.startswith("jsoc-bulk-manifest-")]
    return len(sizes), sum(sizes)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# ---- curl ------------------------------------------------------------------------------------

def curl_fetch(urls: list[str], out: Path, timeout: float) -> tuple[float, float]:
    """One curl process fetching `urls` into `out` over one connection; (seconds, CPU)."""
    out.mkdir(parents=True, exist_ok=True)
    config = out.parent / f"{out.name}.curlrc"
    lines = []
    for i, url in enumerate(urls):
        name = f"{i:05d}-{url.rsplit('/', 1)[-1]}"
        lines += [f'url = "{url}"', f'output = "{out / name}"']
    config.write_text("\n".join(lines) + "\n")
    args = ["curl", "--silent", "--show-error", "--fail", "--http1.1", "--config", str(config)]
    cpu0, t0 = _children_cpu(), time.perf_counter()
    subprocess.run(args, check=True, timeout=timeout)
    return time.perf_counter() - t0, _children_cpu() - cpu0


def run_curl(ref: Reference, out: Path, opts: Options) -> Run:
    seconds, cpu = curl_fetch(ref.urls, out, opts.timeout)
    files, nbytes = dir_summary(out)
    return Run("curl", seconds, cpu, files, nbytes)


# ---- drms and sunpy, in a child process -------------------------------------------------------

def run_client(tool: Tool, sim: Sim, sel: Selection, out: Path, opts: Options) -> Run:
    """`python -m bench._e2e_clients drms|sunpy`; its RESULT line holds time, CPU, error."""
    out.mkdir(parents=True, exist_ok=True)
    job = {"url": sim.url, "email": EMAIL, "recordset": sel.recordset, "method": tool.method,
           "protocol": tool.protocol, "out": str(out), "sunpy": sel.sunpy(),
           "sunpy_sleep": opts.sunpy_sleep, "drms_poll": opts.drms_poll}
    done = subprocess.run([sys.executable, "-m", "bench._e2e_clients", tool.kind,
                           json.dumps(job)], capture_output=True, text=True,
                          timeout=opts.timeout + 120)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        return Run(tool.name, error=f"exit {done.returncode}, no result: {tail}"[:300])
    result = json.loads(lines[-1].removeprefix("RESULT "))
    files, nbytes = dir_summary(out)
    return Run(tool.name, result.get("seconds", math.nan), result.get("cpu", math.nan), files,
               nbytes, error=result.get("error", ""))


# ---- jsoc-bulk -------------------------------------------------------------------------------

class Api:
    """JSON calls to the daemon's REST API over one keep-alive connection."""

    def __init__(self, api: str) -> None:
        rest = api.removeprefix(f"http://{HOST}:")
        port, _, prefix = rest.partition("/")
        self.prefix = "/" + prefix
        self.conn = http.client.HTTPConnection(HOST, int(port), timeout=30)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": "application/json"}
        for attempt in (1, 2):
            try:
                self.conn.request(method, self.prefix + path, data, headers)
                response = self.conn.getresponse()
                payload = response.read()
                break
            except (http.client.HTTPException, OSError):
                self.conn.close()  # reconnects on the next request
                if attempt == 2:
                    raise
        if response.status >= 400:
            raise RuntimeError(f"{method} {path}: HTTP {response.status} {payload[:300]!r}")
        return json.loads(payload or b"null")

    def close(self) -> None:
        self.conn.close()


def wait_job(api: Api, job_id: str, timeout: float) -> dict[str, Any]:
    """Poll the job (every POLL_INTERVAL, growing to 1 % of the elapsed time) until it is in
    a final state (or `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = api.call("GET", f"/jobs/{job_id}")
        if job["state"] in FINAL_STATES:
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {job['state']} after {timeout:.0f} s: "
                               f"files {job.get('files')}, chunks {job.get('chunks')}")
        waited = time.monotonic() - (deadline - timeout)
        time.sleep(min(POLL_MAX, max(POLL_INTERVAL, waited / 100)))


def timed_job(d: Daemon, spec: dict[str, Any], timeout: float) -> tuple[dict[str, Any], float,
                                                                         float]:
    """Submit `spec`, wait for the job to finish; (final job, seconds, daemon CPU).

    The seconds run from just before the POST to the job's `finished_at` as the daemon
    recorded it (same machine, same clock), so how often the bench polls neither delays nor
    loads the measurement; the wall time until the poll saw it is the fallback."""
    api = Api(d.api)
    try:
        cpu0, t0, wall0 = d.cpu_seconds(), time.perf_counter(), time.time()
        job = api.call("POST", "/jobs", spec)
        final = wait_job(api, job["id"], timeout)
        seconds = recorded_seconds(final, wall0, time.perf_counter() - t0)
        return final, seconds, d.cpu_seconds() - cpu0
    finally:
        api.close()


def recorded_seconds(final: dict[str, Any], posted_at: float, seen_after: float) -> float:
    """Seconds from `posted_at` (time.time() just before the POST) to the job's `finished_at`
    as the daemon recorded it; `seen_after` (when a poll saw it) if that is earlier or missing.
    A poll answered late, e.g. behind other API traffic, does not count as download time."""
    if not final.get("finished_at"):
        return seen_after
    finished = datetime.fromisoformat(str(final["finished_at"]).replace("Z", "+00:00"))
    return min(seen_after, finished.timestamp() - posted_at)


def job_error(final: dict[str, Any]) -> str:
    if final["state"] == "succeeded":
        return ""
    errors = "; ".join(e.get("message", "") for e in final.get("recent_errors", [])[:3])
    return f"job {final['state']}: {final.get('error') or ''} {errors}".strip()[:400]


def log_errors(log: Path, lines: int = 2) -> str:
    """The daemon's last ERROR lines (its log is removed with the run's directory)."""
    text = log.read_text(errors="replace") if log.exists() else ""
    found = [ln.strip() for ln in text.splitlines() if "ERROR" in ln or "Error" in ln]
    return " | ".join(found[-lines:])[:400]


def auto_choices(log: Path) -> str:
    """What the daemon logged for each `method: auto` choice (method and its reasons)."""
    text = log.read_text(errors="replace") if log.exists() else ""
    return " | ".join(ln.split("method auto -> ", 1)[1].strip() for ln in text.splitlines()
                      if "method auto -> " in ln)


def run_jsoc_bulk(tool: Tool, sim: Sim, sel: Selection, tmp: Path, opts: Options) -> Run:
    link, note = tool.staging, ""
    if link is not None and link.role == "seed":
        note = link.history.seed(link.step, daemon_data_dir(tmp))
    with daemon(tmp, sim.url, [*opts.daemon_args, *tool.daemon_args]) as d:
        try:
            final, seconds, cpu = timed_job(d, sel.spec(tool.method, tool.protocol),
                                            opts.timeout)
        except Exception as exc:
            raise RuntimeError(f"{type(exc).__name__}: {exc} [daemon log: "
                               f"{log_errors(d.log) or 'no errors'}]") from exc
        files, nbytes = dir_summary(d.download_dir)
    if link is not None and link.role == "keep":
        link.history.keep(link.step, d.data_dir)
    if tool.method == "auto":
        note = "; ".join(x for x in (note, f"chose {auto_choices(d.log) or '?'}") if x)
    error = job_error(final)
    return Run(tool.name, seconds, cpu, files, nbytes, note=note,
               error=f"{error} [daemon log: {log_errors(d.log)}]" if error else "")


# ---- any tool --------------------------------------------------------------------------------

def check_files(run: Run, ref: Reference) -> None:
    """Note a file count or total size that differs from what curl got."""
    if run.ok and (run.files, run.nbytes) != (ref.count, ref.nbytes):
        run.mismatch = (f"got {run.files} files / {run.nbytes} B, expected {ref.count} / "
                     f"{ref.nbytes} B")


def run_tool(tool: Tool, sim: Sim, sel: Selection, ref: Reference, tmp: Path,
             opts: Options) -> Run:
    """Reset the emulator's stats, run `tool` once, check its files; never raises (except
    KeyboardInterrupt): a failure becomes the run's error."""
    tmp.mkdir(parents=True)
    os.sync()  # no run pays for an earlier run's writeback
    sim.reset()
    try:
        if tool.kind == "curl":
            run = run_curl(ref, tmp / "out", opts)
        elif tool.kind in ("drms", "sunpy"):
            run = run_client(tool, sim, sel, tmp / "out", opts)
        else:
            run = run_jsoc_bulk(tool, sim, sel, tmp, opts)
    except Exception as exc:
        run = Run(tool.name, error=f"{type(exc).__name__}: {exc}"[:800])
    try:
        stats = sim.stats()
        run.sim = politeness(stats)
        run.method = "no export" if tool.kind == "curl" else method_seen(stats)
    except Exception as exc:
        run.error = run.error or f"stats: {type(exc).__name__}: {exc}"
    check_files(run, ref)
    shutil.rmtree(tmp, ignore_errors=True)
    return run
