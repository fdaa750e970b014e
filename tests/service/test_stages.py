"""The stages piece by piece: lazy planning arithmetic, chunk rebuilding and splitting, file
placement, and an expiry in the middle of a chunk's downloads (driven stage by stage against
the real emulator and both databases)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from jsocsim import run_emulator
from service.db.repo import Repo, StoredChunk
from service.jobspec import JobSpec
from service.jsoc.client import JsocClient
from service.jsoc.metadata import SeriesMeta
from service.planning.chunks import split_chunk
from service.planning.cursor import JobEstimate, next_chunks
from service.planning.stored import new_chunk, stored_chunk_plan
from service.planning.timeline import job_slots
from service.stages import download_tick, plan_tick, poll_tick, submit_tick
from service.stages.context import StageContext, open_context
from service.stages.download import download_file
from service.stages.placement import PlacementError, destination, lookup_fields, record_values
from service.stages.poll import ready_files
from tests.service.jobs_harness import (
    EMAIL,
    SERIES,
    START,
    Running,
    check_files_match_manifest,
    final_state,
    job_spec,
    make_settings,
    sha256,
    url_path,
    wait_for,
)

pytestmark = pytest.mark.emulator(emails=[EMAIL], staging_delay=0.05, file_size=4000)


@pytest.fixture
async def meta(emu: Any) -> SeriesMeta:
    async with JsocClient(emu.base_url) as jsoc:
        return await jsoc.series_struct(SERIES)


def plan_all(spec: JobSpec, meta: SeriesMeta, estimates: list[JobEstimate],
             max_records: int) -> list[Any]:
    """Plan a job one chunk per call, with a (possibly different) estimate each call."""
    chunks, cursor, done, i = [], None, False, 0
    while not done:
        est = estimates[min(i, len(estimates) - 1)]
        batch, cursor, done = next_chunks(spec, meta, est, cursor, limit=1,
                                          max_records=max_records, max_bytes=10**12)
        chunks += batch
        i += 1
    return chunks


@pytest.mark.parametrize("stride", [1, 3])
async def test_lazy_chunks_cover_the_job_exactly_even_when_estimates_change(
        meta: SeriesMeta, stride: int) -> None:
    cadence = f"{45 * stride}s" if stride > 1 else None
    spec = JobSpec.model_validate(job_spec(13 * stride, cadence=cadence))  # 13 samples
    estimates = [JobEstimate(1.0, 0), JobEstimate(0.5, 0), JobEstimate(1.0, 0)]
    chunks = plan_all(spec, meta, estimates, max_records=2)
    slots = [s for c in chunks for s in c.slots()]
    assert slots == list(job_slots(spec, meta))  # no gap, no overlap, in order
    # the second call believed in half a record per slot, so its chunk has twice the slots
    assert [c.slot_count for c in chunks[:3]] == [2, 4, 2]


async def test_a_stored_chunk_is_rebuilt_and_split_on_slot_boundaries(meta: SeriesMeta) -> None:
    spec = JobSpec.model_validate(job_spec(40, cadence="90s"))
    [chunk], _, _ = next_chunks(spec, meta, JobEstimate(1.0, 1000), None, limit=1,
                                max_records=7, max_bytes=10**12)
    row = new_chunk(chunk, 0)
    rebuilt = stored_chunk_plan(spec, meta, StoredChunk(
        seq=0, part="", recordset=row.recordset, start_time=row.start_time,
        end_time=row.end_time, est_bytes=row.est_bytes))
    assert (rebuilt.first_slot, rebuilt.slot_count, rebuilt.stride) == \
        (chunk.first_slot, chunk.slot_count, chunk.stride) == (chunk.first_slot, 7, 2)
    first, second = split_chunk(rebuilt)
    assert list(first.slots()) + list(second.slots()) == list(chunk.slots())
    assert first.recordset.startswith(f"{SERIES}[{START}/")


async def test_placement_renders_prime_keys_and_stays_inside_the_root(meta: SeriesMeta) -> None:
    record = f"{SERIES}[2014.01.01_00:01:30_TAI][2]"
    values = record_values(record, meta)
    assert values["CAMERA"] == "2" and values["T_REC"].minute == 1
    path = destination("{series}/{T_REC:%Y/%m/%d/%H%M%S}_{CAMERA}_{segment}.fits", meta=meta,
                       record=record, segment="magnetogram", filename="x.fits")
    assert path == f"{SERIES}/2014/01/01/000130_2_magnetogram.fits"
    with pytest.raises(PlacementError, match=r"'\.\.'"):
        destination("{segment}/{filename}", meta=meta, record=record, segment="..",
                    filename="x.fits")
    assert lookup_fields("{series}/{QUALITY}/{recnum}/{T_REC}/{filename}", meta) == \
        ["QUALITY", "recnum"]


async def test_ready_files_look_up_keywords_the_template_names(emu: Any, meta: SeriesMeta,
                                                               repo: Repo, db_url: str,
                                                               tmp_path: Path) -> None:
    spec = JobSpec.model_validate(job_spec(2, protocol="as-is",
                                           path_template="{recnum}/{QUALITY}/{filename}"))
    settings = make_settings(tmp_path, emu.base_url, db_url)
    async with open_context(settings, repo, asyncio.Event(), "w") as ctx:
        recordset = f"{SERIES}[{START}/90s]{{magnetogram}}"
        reply = await ctx.jsoc.exp_request(recordset, EMAIL, method="url_quick",
                                           protocol="as-is")
        files = await ready_files(ctx, spec, meta, reply, recordset)
        listing = await ctx.jsoc.rs_list(recordset, keys=["*recnum*", "QUALITY"])
    recnums = [str(v) for v in listing["keywords"][0]["values"]]
    quality = listing["keywords"][1]["values"]
    assert [f["dest_path"].split("/")[:2] for f in files] == \
        [[r, q] for r, q in zip(recnums, quality, strict=True)]
    assert [f["file_key"] for f in files] == [
        f"as-is:{SERIES}[{START}][2]:magnetogram",
        f"as-is:{SERIES}[2014.01.01_00:00:45_TAI][2]:magnetogram"]


async def drain(ctx: StageContext) -> None:
    while ctx.tasks:
        await asyncio.gather(*ctx.tasks)


async def poll_until_ready(ctx: StageContext, repo: Repo) -> None:
    """Poll (stepping the stages by hand) until the export has files ready to download."""
    async def ready() -> bool:
        await poll_tick(ctx)
        await drain(ctx)
        return bool(await repo.list_download_hosts())
    await wait_for(ready, 10, "the export to be ready")


async def test_expired_export_is_exported_again_for_the_missing_files_only(
        tmp_path: Path, repo: Repo, db_url: str) -> None:
    async with run_emulator(tmp_path / "jsoc", emails=[EMAIL], staging_delay=0.05,
                            file_size=4000, export_expiry=3600) as emu:
        settings = make_settings(tmp_path, emu.base_url, db_url, max_chunk_records=4)
        job, _ = await repo.create_job(job_spec(4), notify_email=EMAIL)
        async with open_context(settings, repo, asyncio.Event(), "stepper") as ctx:
            assert await plan_tick(ctx) and await submit_tick(ctx)
            await drain(ctx)
            await poll_until_ready(ctx, repo)
            [host] = await repo.list_download_hosts()
            for _ in range(2):  # two of the four files arrive before the export expires
                [claim] = await repo.claim_files_to_download("stepper", host)
                await download_file(ctx, claim)
            assert len(await repo.list_files(job.id, state="done")) == 2
            emu.advance_clock(3601)  # the retention limit, simulated: JSOC deletes the export
            [export] = await repo.list_exports(job.id)
            assert (await ctx.jsoc.exp_status(export.request_id, check=False)).status == 5
            assert await download_tick(ctx)  # a 404: the worker notices the expiry
            await drain(ctx)
        exports = await repo.list_exports(job.id)
        assert [e.state for e in exports] == ["expired"]
        running = Running(settings, repo)
        try:
            await wait_for(lambda: final_state(repo, job.id), 20, "the job to finish")
        finally:
            await running.stop()
        assert (await repo.get_job(job.id)).state == "succeeded"
        exports = await repo.list_exports(job.id)
        assert [e.state for e in exports] == ["expired", "ready"]
        files = await repo.list_files(job.id)
        assert len(files) == 4 and {f.state for f in files} == {"done"}
        second_dir = exports[1].index["dir"]
        fetched_again = [p for p, s in emu.stats()["files"].items()
                         if p.startswith(second_dir + "/") and s["requests"]]
        assert len(fetched_again) == 2  # only the two missing files came from the new export
        redone = [f for f in files if f.url.startswith(emu.base_url + second_dir.lstrip("/"))]
        check_files_match_manifest(emu, settings.download_dir, redone)
        for f in files:  # the two early files are intact too (same content as re-exported)
            twin = next(p for p in emu.manifest() if p.startswith(second_dir)
                        and p.endswith("/" + f.dest_path.rsplit("/", 1)[-1]))
            assert sha256(settings.download_dir / f.dest_path) == emu.manifest()[twin]["sha256"]
        assert url_path(redone[0].url).startswith(second_dir)


async def test_an_outage_pauses_downloads_without_spending_their_retries(
        tmp_path: Path, repo: Repo, db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    async with run_emulator(tmp_path / "jsoc", emails=[EMAIL], staging_delay=0.05,
                            file_size=4000) as emu:
        settings = make_settings(tmp_path, emu.base_url, db_url, max_chunk_records=3,
                                 retry_max_attempts=6)
        job, _ = await repo.create_job(job_spec(3), notify_email=EMAIL)
        async with open_context(settings, repo, asyncio.Event(), "stepper") as ctx:
            assert await plan_tick(ctx) and await submit_tick(ctx)
            await drain(ctx)
            await poll_until_ready(ctx, repo)
        caplog.set_level(logging.DEBUG, logger="service.stages")
        emu.set_faults(outage_seconds=3600)  # JSOC is down (files answer 503 + Retry-After)
        running = Running(settings, repo)
        try:
            async def many_refusals() -> bool:  # probes the worker reports as refused
                return sum("circuit breaker open" in r.getMessage()
                           for r in caplog.records) >= 10
            await wait_for(many_refusals, 20, "the worker to probe JSOC during the outage")
            assert running.worker.ctx.breaker(emu.base_url).state.value != "closed"
            assert await final_state(repo, job.id) is None
            emu.advance_clock(3601)  # the outage ends
            await wait_for(lambda: final_state(repo, job.id), 20, "the job to finish")
        finally:
            await running.stop()
        assert (await repo.get_job(job.id)).state == "succeeded"
        files = await repo.list_files(job.id)
        # 10+ refused requests, yet no file used up its 6 attempts: only failures before the
        # breaker opened were counted
        assert max(f.attempts for f in files) < 5
        check_files_match_manifest(emu, settings.download_dir, files)


@pytest.mark.unit
async def test_connection_limits_and_poll_pacing(tmp_path: Path) -> None:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}"  # never opened by this test
    settings = make_settings(tmp_path, "http://127.0.0.1:8080/", db_url, poll_min=1.0,
                             poll_max=60.0, global_download_limit=6,
                             host_connection_limits={"mirror.example.org": 3})
    async with open_context(settings, Repo.from_url(db_url), asyncio.Event(), "w") as ctx:
        assert ctx.connection_limit("127.0.0.1:8080") == 1  # JSOC: one connection
        assert ctx.connection_limit("mirror.example.org") == 3
        assert ctx.connection_limit("local") == 6  # copies of stored files
        assert ctx.poll_delay(10, 0) == 10  # JSOC's wait hint
        assert ctx.poll_delay(10_000, 0) == 60  # bounded by poll_max
        assert ctx.poll_delay(-4, 0) == 1 and ctx.poll_delay(None, 3) == 1.5 ** 3  # backoff
        assert ctx.poll_delay(0.1, 0) == 1  # never faster than poll_min
        assert all(0 <= ctx.retry_delay(n, retry_after=None) <= settings.retry_cap
                   for n in range(20))


@pytest.mark.emulator(file_size=20_000, bandwidth=10_000)  # about 2 s a file
async def test_a_paused_job_gets_back_the_files_a_lane_leased_but_did_not_start(
        emu: Any, repo: Repo, db_url: str, tmp_path: Path) -> None:
    """A lane leases a whole batch; pausing the job lets the file in flight finish and hands
    the rest back (pending) instead of fetching them one after another while paused."""
    settings = make_settings(tmp_path, emu.base_url, db_url, max_chunk_records=6)
    job, _ = await repo.create_job(job_spec(6), notify_email=EMAIL)  # one export of 6 files
    running = Running(settings, repo)
    try:
        async def leased() -> bool:
            return (await repo.job_summary(job.id)).files.get("downloading", 0) == 6
        await wait_for(leased, 20, "the lane to lease all 6 files")
        await repo.pause_job(job.id)

        async def handed_back() -> bool:
            return (await repo.job_summary(job.id)).files.get("pending", 0) >= 5
        await wait_for(handed_back, 10, "the files not started handed back")
        await asyncio.sleep(3)  # the file in flight finishes; no other is fetched meanwhile
        files = (await repo.job_summary(job.id)).files
        assert files.get("downloading", 0) == 0 and files.get("pending", 0) >= 5, files
        requests = sum(f["requests"] for p, f in emu.stats()["files"].items()
                       if p.endswith(".fits"))
        assert requests <= 1, emu.stats()["files"]
    finally:
        await running.stop()
