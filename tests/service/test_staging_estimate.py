"""``method: auto`` learns url-tar's staging cost from the exports it makes: each staged export
leaves an observation (records, size, seconds from request to ready) in the database, the
estimate is a line through the newest of them, and the choice weighs files × round trip
against it. End to end against the emulator with a real round trip (``latency``), on SQLite
and Postgres, across a restart."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from jsocsim import run_emulator
from service.db.repo import Repo, StagingSample
from service.db.repo_staging import KEEP_OBSERVATIONS
from service.settings import Settings
from service.stages.staging_estimate import (
    RECENT,
    StagingEstimate,
    estimate_staging,
    learned_staging,
)
from service.timeutil import format_tai, parse_time
from tests.service.jobs_harness import EMAIL, START, STEP, make_settings, run_job_to_end

LATENCY = 0.02  # seconds before every emulator response: the round trip auto measures
STAGING = 0.4  # seconds every staged export takes in the emulator
TEMPLATE = "{series}/{T_REC:%Y/%m/%d}/{filename}"


# ---- the estimate from observations ----------------------------------------------------------

def test_nothing_observed_falls_back_to_the_setting() -> None:
    assert estimate_staging([], 30.0) == StagingEstimate(30.0, 0.0, 0)
    assert estimate_staging([], 30.0).seconds(5000) == 30.0
    assert estimate_staging([(0, 5.0), (10, -1.0)], 7.0).observations == 0  # unusable rows


def test_sizes_that_differ_give_base_and_per_record_cost() -> None:
    points = [(100, 22.0), (300, 26.0), (1000, 40.0)]  # 20 s + 0.02 s a record
    est = estimate_staging(points, 30.0)
    assert est.base == pytest.approx(20.0) and est.per_record == pytest.approx(0.02)
    assert est.seconds(2000) == pytest.approx(60.0) and est.observations == 3


def test_one_export_stuck_in_the_queue_does_not_move_the_line() -> None:
    points = [(100, 22.0), (300, 26.0), (1000, 40.0), (500, 30.0), (200, 24.0), (300, 600.0)]
    est = estimate_staging(points, 30.0)
    assert est.per_record == pytest.approx(0.02, abs=0.002)
    assert est.seconds(1000) == pytest.approx(40.0, abs=3.0)


def test_one_size_splits_its_time_with_the_setting_as_base() -> None:
    slow = estimate_staging([(100, 70.0), (100, 72.0)], 30.0)  # staging grows with records
    assert slow.base == 30.0 and slow.per_record == pytest.approx(0.41)
    assert slow.seconds(1000) == pytest.approx(440.0)
    quick = estimate_staging([(300, 26.0)], 30.0)  # cheaper than the setting: all base
    assert quick == StagingEstimate(26.0, 0.0, 1)


def test_staging_that_shrinks_with_size_is_clamped_to_no_per_record_cost() -> None:
    est = estimate_staging([(100, 40.0), (1000, 20.0)], 30.0)
    assert est.per_record == 0.0 and est.base == pytest.approx(30.0)


# ---- persisted observations ------------------------------------------------------------------

async def test_observations_are_kept_newest_first_and_bounded(repo: Repo) -> None:
    for i in range(KEEP_OBSERVATIONS + 5):
        await repo.add_staging_sample(StagingSample("url", "fits", i + 1, None, float(i)))
    samples = await repo.staging_samples()
    assert len(samples) == KEEP_OBSERVATIONS
    assert samples[0].records == KEEP_OBSERVATIONS + 5 and samples[-1].records == 6
    assert len(await repo.staging_samples(RECENT)) == RECENT
    with pytest.raises(ValueError, match="records >= 1"):
        await repo.add_staging_sample(StagingSample("url", "fits", 0, None, 1.0))


# ---- learned from real exports, across a restart -----------------------------------------------

@pytest.fixture
async def far_emu(tmp_path: Path) -> AsyncIterator[Any]:
    async with run_emulator(tmp_path / "jsoc", emails=[EMAIL], latency=LATENCY,
                            staging_delay=STAGING, file_size=8000) as emulator:
        yield emulator


def spec(first_slot: int, slots: int, **extra: Any) -> dict[str, Any]:
    """as-is, method auto: ``slots`` hmi.M_45s magnetograms from slot ``first_slot`` on."""
    start = parse_time(START) + first_slot * STEP
    return {"series": "hmi.M_45s", "start": format_tai(start),
            "end": format_tai(start + (slots - 1) * STEP), "segments": ["magnetogram"],
            "protocol": "as-is", "path_template": TEMPLATE, **extra}


async def methods(settings: Settings, repo: Repo, job_spec: dict[str, Any]) -> list[str | None]:
    job_id = await run_job_to_end(settings, repo, job_spec, timeout=60)
    assert (await repo.get_job(job_id)).state == "succeeded"
    return [e.method for e in await repo.list_exports(job_id)]


async def test_auto_learns_staging_from_exports_and_keeps_it_across_a_restart(
        far_emu: Any, db_url: str, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, far_emu.base_url, db_url, max_chunk_records=500,
                             tar_min_files=3, tar_max_mean_mb=100)
    assert settings.tar_staging_seconds == 30.0  # the default: more than 150 round trips
    repo = Repo.from_url(db_url)
    try:
        cold = await learned_staging(repo, settings)
        assert cold == StagingEstimate(30.0, 0.0, 0)
        assert await methods(settings, repo, spec(0, 80)) == ["url_quick"]  # 1.6 s < 30 s
        assert await repo.staging_samples() == []  # a quick export does not stage
        assert await methods(settings, repo, spec(100, 8, method="url-tar")) == ["url-tar"]
    finally:
        await repo.close()
    repo = Repo.from_url(db_url)  # a restarted daemon: a new engine on the same database
    try:
        [seen] = await repo.staging_samples()
        assert (seen.method, seen.protocol, seen.records) == ("url-tar", "as-is", 8)
        assert STAGING <= seen.seconds < 10 and seen.size_bytes is not None
        learned = await learned_staging(repo, settings)
        assert learned.observations == 1 and learned.seconds(150) == pytest.approx(seen.seconds)
        assert learned.seconds(150) < 150 * LATENCY < cold.seconds(150)
        assert await methods(settings, repo, spec(200, 150)) == ["url-tar"]  # 150 × 20 ms
        assert await methods(settings, repo, spec(400, 6)) == ["url_quick"]  # 6 × 20 ms
        assert len(await repo.staging_samples()) == 2  # the auto url-tar export staged too
    finally:
        await repo.close()


async def test_fits_exports_inform_the_estimate(far_emu: Any, db_url: str,
                                                tmp_path: Path) -> None:
    """A per-file fits export stages the way url-tar does: it is observed too."""
    settings = make_settings(tmp_path, far_emu.base_url, db_url, max_chunk_records=3,
                             tar_min_files=1000)
    repo = Repo.from_url(db_url)
    try:
        assert await methods(settings, repo, spec(0, 5, protocol="fits")) == ["url", "url"]
        samples = await repo.staging_samples()
        assert sorted(s.records for s in samples) == [2, 3]
        assert {(s.method, s.protocol) for s in samples} == {("url", "fits")}
        assert all(STAGING <= s.seconds < 10 for s in samples), samples
        assert (await learned_staging(repo, settings)).observations == 2
    finally:
        await repo.close()
