"""Download rate and ETA of a job, from the byte counts the API has seen over time.

The database keeps only the current ``bytes_done`` of each file, so the API remembers a few
recent (time, bytes) samples per job, taken whenever the job is read. The rate is measured over
a sliding window of those samples; before there are two samples far enough apart it falls back
to the job's average since it was created.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from datetime import datetime

from service.db.repo import JobSummary
from service.states import CHUNK_UNLISTED, FileState
from service.timeutil import TimeFormatError, parse_time

UNLISTED_CHUNK_STATES = CHUNK_UNLISTED

WINDOW_SECONDS = 60.0
MIN_SPAN_SECONDS = 1.0
MAX_SAMPLES = 64
MAX_JOBS = 1000


class RateTracker:
    """Per-job recent byte samples -> bytes per second (bounded memory)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 window: float = WINDOW_SECONDS) -> None:
        self.clock = clock
        self.window = window
        self._samples: OrderedDict[str, deque[tuple[float, int]]] = OrderedDict()

    def observe(self, job_id: str, bytes_done: int) -> float | None:
        """Record a sample and return the windowed rate (None without a usable window)."""
        now = self.clock()
        samples = self._samples.pop(job_id, None) or deque(maxlen=MAX_SAMPLES)
        if samples and bytes_done < samples[-1][1]:
            samples.clear()  # a retry or delete moved backwards: start over
        samples.append((now, bytes_done))
        while len(samples) > 2 and now - samples[1][0] >= self.window:
            samples.popleft()
        self._samples[job_id] = samples
        while len(self._samples) > MAX_JOBS:
            self._samples.popitem(last=False)
        first_t, first_b = samples[0]
        span = now - first_t
        if span < MIN_SPAN_SECONDS:
            return None
        return (bytes_done - first_b) / span

    def forget(self, job_id: str) -> None:
        self._samples.pop(job_id, None)


def average_rate(bytes_done: int, created_at: datetime, now: datetime) -> float | None:
    """Bytes per second since the job was created (None before any byte or time)."""
    elapsed = (now - created_at).total_seconds()
    if bytes_done <= 0 or elapsed <= 0:
        return None
    return bytes_done / elapsed


def eta_seconds(bytes_done: int, bytes_total: int, rate: float | None) -> float | None:
    """Seconds until ``bytes_total`` at ``rate`` (0 when done; None when unknown)."""
    if bytes_total <= 0:
        return None
    remaining = max(bytes_total - bytes_done, 0)
    if remaining == 0:
        return 0.0
    if not rate or rate <= 0:
        return None
    return remaining / rate


def estimated_total(summary: JobSummary) -> int:
    """Best estimate of a job's total bytes, for the whole range.

    JSOC's file lists carry no sizes, so once files finish their mean size times the files
    listed stands in for the unknown sizes. Chunks not listed yet count with the planner's
    estimate (from rs_list ``*size*``) scaled by what the listed chunks turned out to be
    against their estimate, so the total does not jump when the last chunk is listed; with
    nothing to scale by, the planner's estimate of the job is the floor. The part of the range
    not planned yet is extrapolated from the planned chunks (``unplanned_estimate``).
    """
    listed_bytes = listed_total(summary)
    unlisted = sum(summary.chunks.get(state, 0) for state in UNLISTED_CHUNK_STATES)
    ratio = real_over_estimate(summary, listed_bytes, unlisted)
    rest = unplanned_estimate(summary, ratio)
    if unlisted and ratio is not None and summary.est_unlisted:
        planned = listed_bytes + round(summary.est_unlisted * ratio)
    elif unlisted or (rest is None and not summary.job.plan_done):
        planned = max(listed_bytes, summary.est_bytes)
    else:
        planned = listed_bytes
    return planned + (rest or 0)


def listed_total(summary: JobSummary) -> int:
    """Bytes of the files listed so far: their listed sizes, or the mean finished file times
    their number when JSOC listed no sizes."""
    listed_bytes = summary.bytes_expected
    files_done = summary.files.get(FileState.DONE, 0)
    if files_done and listed_bytes < summary.bytes_done:
        listed_bytes = round(summary.bytes_done / files_done * sum(summary.files.values()))
    return listed_bytes


def estimated_files(summary: JobSummary, bytes_total: int) -> int | None:
    """About how many files the whole job has: the files listed so far, plus the bytes still
    unlisted (of ``bytes_total``) at the listed files' mean size; None before any listing."""
    listed_files = sum(summary.files.values())
    listed_bytes = listed_total(summary)
    if not listed_files or listed_bytes <= 0:
        return None
    rest = max(bytes_total - listed_bytes, 0)
    return listed_files + round(rest / (listed_bytes / listed_files))


def real_over_estimate(summary: JobSummary, listed_bytes: int, unlisted: int) -> float | None:
    """Listed bytes over the planner's estimate of the listed chunks (None when unknown)."""
    est_listed = summary.est_bytes - summary.est_unlisted
    if listed_bytes <= 0 or est_listed <= 0 or (unlisted and not summary.est_unlisted):
        return None
    return listed_bytes / est_listed


def unplanned_estimate(summary: JobSummary, ratio: float | None) -> int | None:
    """Bytes of the part of a job's range not planned yet (chunks are planned a few at a
    time): the planned chunks' estimate per second of range times the seconds left, scaled by
    ``ratio`` (real over estimated sizes) when known. 0 for a fully planned job; None when it
    cannot be told (a follow job, no range or no estimate yet)."""
    job = summary.job
    if job.plan_done:
        return 0
    spec = job.spec or {}
    if job.follow or summary.est_bytes <= 0 or not job.planned_until:
        return None
    try:
        start, end = parse_time(str(spec.get("start"))), parse_time(str(spec.get("end")))
        cursor = parse_time(job.planned_until)
    except (TimeFormatError, ValueError):
        return None
    if not start < cursor < end:
        return None
    per_second = summary.est_bytes / (cursor - start)
    return round(per_second * (end - cursor) * (1.0 if ratio is None else ratio))
