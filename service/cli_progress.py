"""Job progress for the CLI: rich progress bars on a terminal, plain lines otherwise."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from service.states import JOB_FINAL, ExportState, FileState

TERMINAL_STATES = frozenset(JOB_FINAL)
JobFetcher = Callable[[], dict[str, Any]]


def human_bytes(n: float | None) -> str:
    """1536 -> '1.5 KiB'."""
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float | None) -> str:
    """3725 -> '1h02m05s'."""
    if seconds is None:
        return "?"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _done_total(counts: Mapping[str, int] | None, done_state: str = "done") -> tuple[int, int]:
    counts = counts or {}
    return int(counts.get(done_state, 0)), int(sum(counts.values()))


def files_done_total(job: Mapping[str, Any]) -> tuple[int, int, str]:
    """(done, total, text) of a job's files: the total is the API's estimate for the whole
    job while files are still to be listed ('5/~30'), else the files listed ('30/30')."""
    done, listed = _done_total(job.get("files"))
    estimate = job.get("files_total")
    if estimate and estimate > listed and job.get("state") not in TERMINAL_STATES:
        return done, int(estimate), f"{done}/~{estimate}"
    return done, listed, f"{done}/{listed}"


def bytes_info(job: Mapping[str, Any]) -> str:
    """'1.0 MiB / 4.0 MiB  256.0 KiB/s  ETA 12s' from a job status document."""
    text = f"{human_bytes(job.get('bytes_done'))} / {human_bytes(job.get('bytes_total'))}"
    if job.get("rate_bytes_per_s"):
        text += f"  {human_bytes(job['rate_bytes_per_s'])}/s"
    if job.get("eta_seconds") is not None:
        text += f"  ETA {human_duration(job['eta_seconds'])}"
    return text


def exports_info(job: Mapping[str, Any], limit: int = 3) -> str:
    """JSOC request ids and states of the exports being staged, e.g.
    'JSOC_20240101_001 polling (status 1), JSOC_20240101_002 submitted'."""
    staging = [e for e in job.get("active_exports") or [] if e.get("state") != ExportState.READY]
    parts = []
    for export in staging[:limit]:
        status = export.get("jsoc_status")
        parts.append(f"{export.get('request_id') or 'export ' + str(export.get('id'))} "
                     f"{export.get('state')}" + (f" (status {status})" if status is not None
                                                 else ""))
    if len(staging) > limit:
        parts.append(f"+{len(staging) - limit} more")
    return ", ".join(parts)


def status_line(job: Mapping[str, Any]) -> str:
    """One plain line describing a job's progress (for logs and non-terminals)."""
    chunks_done, chunks_total = _done_total(job.get("chunks"))
    files_text = files_done_total(job)[2]
    failed = int((job.get("files") or {}).get(FileState.FAILED, 0))
    line = (f"job {job.get('id')} {job.get('state')}: chunks {chunks_done}/{chunks_total}, "
            f"files {files_text}")
    if failed:
        line += f" ({failed} failed)"
    staging = exports_info(job)
    if staging:
        line += f", staging {staging}"
    return f"{line}, bytes {bytes_info(job)}"


class JobProgressView:
    """Rich progress bars for chunks, files and bytes of one job."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description:>7}"),
            BarColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
            transient=False,
        )
        self.state_task: TaskID = self.progress.add_task("state", total=None, info="", start=False)
        self.export_task = self.progress.add_task("exports", total=None, info="")
        self.chunk_task = self.progress.add_task("chunks", total=None, info="")
        self.file_task = self.progress.add_task("files", total=None, info="")
        self.byte_task = self.progress.add_task("bytes", total=None, info="")

    def __enter__(self) -> JobProgressView:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, job: Mapping[str, Any]) -> None:
        info = f"job {job.get('id')}: {job.get('state')}"
        self.progress.update(self.state_task, info=info)
        exports = job.get("exports") or {}
        ready = int(exports.get(ExportState.READY, 0))
        self.progress.update(self.export_task, completed=ready, total=sum(exports.values()) or None,
                             info=f"{ready} ready  {exports_info(job)}".rstrip())
        done, total = _done_total(job.get("chunks"))
        self.progress.update(self.chunk_task, completed=done, total=total or None,
                             info=f"{done}/{total}")
        done, total, text = files_done_total(job)
        self.progress.update(self.file_task, completed=done, total=total or None, info=text)
        expected = job.get("bytes_total")
        self.progress.update(self.byte_task, completed=job.get("bytes_done") or 0,
                             total=expected or None, info=bytes_info(job))


def follow_job(fetch: JobFetcher, *, interval: float = 1.0, console: Console | None = None,
               out: TextIO | None = None, sleep: Callable[[float], None] = time.sleep,
               ) -> dict[str, Any]:
    """Poll ``fetch`` until the job reaches a terminal state; show bars or plain lines.

    Returns the last job document. Errors from ``fetch`` propagate to the caller.
    """
    console = console or Console(file=out)
    job = fetch()
    if console.is_terminal:
        with JobProgressView(console) as view:
            view.update(job)
            while job.get("state") not in TERMINAL_STATES:
                sleep(interval)
                job = fetch()
                view.update(job)
        return job
    last_line = ""
    while True:
        line = status_line(job)
        if line != last_line:
            console.print(line, highlight=False, soft_wrap=True)
            last_line = line
        if job.get("state") in TERMINAL_STATES:
            return job
        sleep(interval)
        job = fetch()
