"""The job total behind progress bars and ETAs when JSOC lists files without sizes."""

from __future__ import annotations

import pytest

from service.api.rates import estimated_total
from service.db.models import Job
from service.db.repo import JobSummary

pytestmark = pytest.mark.unit


def summary(*, plan_done: bool, chunks: dict[str, int], files: dict[str, int], done: int,
            listed: int = 0, est: int = 0) -> JobSummary:
    return JobSummary(job=Job(id="j", spec={}, state="running", plan_done=plan_done),
                      chunks=chunks, files=files, bytes_done=done, bytes_expected=listed,
                      est_bytes=est)


def test_unknown_sizes_extrapolate_from_finished_files() -> None:
    s = summary(plan_done=True, chunks={"downloading": 1}, files={"done": 5, "pending": 15},
                done=5 * 1000, est=10**9)
    assert estimated_total(s) == 20 * 1000  # everything listed: the planner's guess is moot


def test_unlisted_chunks_keep_the_planner_estimate_as_floor() -> None:
    s = summary(plan_done=True, chunks={"downloading": 1, "exporting": 1},
                files={"done": 5, "pending": 15}, done=5 * 1000, est=10**9)
    assert estimated_total(s) == 10**9
    unplanned = summary(plan_done=False, chunks={"done": 1}, files={"done": 2}, done=2000,
                        est=10**6)
    assert estimated_total(unplanned) == 10**6


def test_listed_sizes_win_when_jsoc_gave_them() -> None:
    s = summary(plan_done=True, chunks={"downloading": 1}, files={"done": 1, "pending": 1},
                done=300, listed=800, est=10**9)
    assert estimated_total(s) == 800
