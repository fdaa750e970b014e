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

UNLISTED_CHUNK_STATES = ("planned", "exporting")

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
    """Best estimate of a job's total bytes.

    JSOC's file lists carry no sizes, so once files finish their mean size times the files
    listed stands in for the unknown sizes; while chunks are still unplanned or unlisted the
    planner's estimate (from rs_list ``*size*``) is the floor.
    """
    listed_bytes = summary.bytes_expected
    files_done = summary.files.get("done", 0)
    if files_done and listed_bytes < summary.bytes_done:
        listed_bytes = round(summary.bytes_done / files_done * sum(summary.files.values()))
    unlisted = sum(summary.chunks.get(state, 0) for state in UNLISTED_CHUNK_STATES)
    if unlisted or not summary.job.plan_done:
        return max(listed_bytes, summary.est_bytes)
    return listed_bytes
