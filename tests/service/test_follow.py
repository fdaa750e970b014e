"""Follow jobs (mirrors) end to end in-process: the emulator's simulated clock makes records
appear (and a seeded share of them appear late); the mirror must fetch each exactly once."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from jsocsim import run_emulator
from jsocsim.records import RecordsConfig
from service.api.schemas import MirrorStatus, mirror_status
from service.db.repo import Repo
from service.jsoc.client import JsocClient
from service.jsoc.listing import parse_listing
from service.planning.cursor import JobEstimate
from service.planning.follow import late_chunks, late_in
from service.planning.recordsets import newest_recordset, time_group
from service.planning.timeline import Timeline, timeline
from service.stages.context import open_context
from service.stages.follow import late_slots
from service.timeutil import format_tai, parse_time
from service.validation import parse_job_spec
from tests.service.api_harness import EMAIL as API_EMAIL
from tests.service.api_harness import served_api
from tests.service.jobs_harness import EMAIL, Running, describe, make_settings, wait_for
from tests.service.rows import ready_export
from tests.service.series_meta import aia_meta, make_meta, sharp_meta, t_rec
from tests.service.stub_server import serving

START = "2014.01.01_00:00:00_TAI"
STEP_45S = 45


def mirror_spec(series: str, **extra: Any) -> dict[str, Any]:
    return {"series": series, "start": START, "follow": True, "check_interval": "0.1s",
            **extra}


async def jsoc_records(jsoc: JsocClient, series: str, until: str,
                       cadence: float | None = None) -> set[str]:
    """Names of the records JSOC lists now in [START, until) (on the job's cadence)."""
    seconds = parse_time(until) - parse_time(START)
    if seconds <= 0:
        return set()
    reply = await jsoc.rs_list(f"{series}[{time_group(parse_time(START), seconds, cadence)}]",
                               keys=["T_REC"], rec_index=True)
    return {r["name"] for r in reply.get("recinfo") or []}


async def caught_up(repo: Repo, jsoc: JsocClient, job_id: str, series: str,
                    cadence: float | None = None, since: float = 0.0) -> MirrorStatus | None:
    """The mirror status once the job holds, done, exactly JSOC's records up to JSOC's newest
    (lag 0: covered_until == jsoc_until), seen at ``since`` or later; None before."""
    status = mirror_status(await repo.follow_state(job_id))
    if status.jsoc_until is None or status.behind_seconds != 0 \
            or parse_time(status.jsoc_until) < since:
        return None
    files = await repo.list_files(job_id, limit=100_000)
    if any(f.state != "done" for f in files):
        return None
    want = await jsoc_records(jsoc, series, status.covered_until or START, cadence)
    return status if {f.record for f in files} == want else None


def slots_named(recordset: str) -> list[str] | None:
    """The T_REC values a late-record chunk names (None for a time-range chunk)."""
    group = recordset.split("[", 1)[1].split("]", 1)[0]
    return None if "/" in group else group.split(",")


def each_file_served_once(emu: Any) -> None:
    """No file was sent twice (one still in flight when the worker stopped may have 0)."""
    stats = emu.stats()
    assert stats["files"], "nothing was downloaded"
    for path, counts in stats["files"].items():
        assert counts["full_downloads"] <= 1, (path, counts)
    for client in stats["clients"].values():
        assert client["bytes_served_again"] == 0


async def each_record_exported_once(repo: Repo, job_id: str) -> None:
    """JSOC's record counts of the job's finished exports add up to their files (one segment
    each): no record was exported twice."""
    ready = {e.id: int(e.index["count"]) for e in await repo.list_exports(job_id)
             if e.state == "ready"}
    files = [f for f in await repo.list_files(job_id, limit=100_000) if f.export_id in ready]
    assert ready and sum(ready.values()) == len(files)


@pytest.mark.unit
def test_late_record_chunks_name_each_slot_once_within_the_limits() -> None:
    spec = parse_job_spec({"series": "aia.lev1_euv_12s", "start": START, "follow": True,
                           "wavelengths": [171, 193], "segments": ["image"]})
    meta = aia_meta()
    tl = timeline(spec, meta)
    slots = [tl.first + i for i in (0, 1, 5, 9, 10)]
    rows = late_chunks(spec, meta, tl, JobEstimate(None, 100), slots, max_records=4)
    named = [slots_named(r.recordset) for r in rows]
    assert [len(n) for n in named] == [2, 2, 1]  # 2 wavelengths a slot, 4 records a chunk
    assert [parse_time(t) for n in named for t in n] == [tl.time(s) for s in slots]
    assert all(r.recordset.endswith("[171,193]{image}") for r in rows)
    assert [r.est_records for r in rows] == [4, 4, 2]
    assert newest_recordset(meta) == "aia.lev1_euv_12s[$]"
    assert newest_recordset(sharp_meta()) == "hmi.sharp_720s[][$]"


def listed_with_a_missing_time(series: str, tl: Timeline) -> tuple[dict[str, Any], list[int]]:
    """An rs_list reply (R=1, key=T_REC) of the first four slots, as JSOC shapes it, whose
    second record's T_REC is MISSING; and those four slots."""
    slots = [tl.first + i for i in range(4)]
    names = [f"{series}[{format_tai(tl.time(s))}]" for s in slots]
    values = [format_tai(tl.time(s)) for s in slots]
    values[1] = "MISSING"
    return {"status": 0, "count": 4, "keywords": [{"name": "T_REC", "values": values}],
            "recinfo": [{"name": n} for n in names]}, slots


@pytest.mark.unit
def test_a_record_with_a_missing_time_is_skipped_without_shifting_the_others() -> None:
    spec = parse_job_spec(mirror_spec("hmi.M_45s"))
    tl = timeline(spec, make_meta("hmi.M_45s", [t_rec(45)], [], ["magnetogram"]))
    reply, slots = listed_with_a_missing_time("hmi.M_45s", tl)
    records = [(n.lower(), t) for n, t in parse_listing(reply).record_times("T_REC")]
    assert [t for _, t in records] == [tl.time(slots[0]), None, tl.time(slots[2]),
                                       tl.time(slots[3])]
    held = {records[0][0], records[2][0]}  # the job has the 1st and 3rd; the 4th is late
    assert late_in(tl, records, held, []) == [slots[3]]


async def test_late_slots_keeps_names_and_times_paired_past_a_missing_time(
        tmp_path: Path, repo: Repo, db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Through the stage, its repository and real HTTP (a stub JSOC: the emulator's time
    prime keys are never MISSING): the record after a MISSING time is found late in its own
    slot, not in the slot of the record before it."""
    series = "hmi.M_45s"
    spec = parse_job_spec(mirror_spec(series))
    meta = make_meta(series, [t_rec(45)], [], ["magnetogram"])
    tl = timeline(spec, meta)
    reply, slots = listed_with_a_missing_time(series, tl)

    async def jsoc(request: web.Request) -> web.Response:
        assert request.query["op"] == "rs_list"
        return web.json_response(reply)

    job, _ = await repo.create_job(mirror_spec(series), notify_email=EMAIL, follow=True)
    await repo.add_chunks(job.id, [{"seq": 0, "recordset": f"{series}[{START}/180s]",
                                    "start_time": START,
                                    "end_time": format_tai(tl.time(slots[-1] + 1))}])
    await repo.start_job(job.id)
    held = [format_tai(tl.time(slots[i])) for i in (0, 2)]  # the 1st and 3rd were fetched
    await ready_export(repo, job.id, held)
    async with serving(jsoc) as url, \
            open_context(make_settings(tmp_path, url, db_url), repo, asyncio.Event(), "w") as ctx:
        late = await late_slots(ctx, job.id, spec, meta, tl, range(slots[0], slots[-1] + 1))
    assert late == [slots[3]]
    assert any("1 record(s) listed with an unreadable T_REC" in r.getMessage()
               and r.levelno == logging.WARNING for r in caplog.records)


async def test_mirror_fetches_new_and_late_records_exactly_once(
        tmp_path: Path, repo: Repo, db_url: str) -> None:
    series = "hmi.M_45s"
    late = RecordsConfig(seed=5, late_fraction=0.3, late_delay=300.0)
    async with run_emulator(tmp_path / "jsoc", emails=[EMAIL], staging_delay=0.02,
                            file_size=2000, clock_start="2014.01.01_00:10:00_TAI",
                            records=late) as emu, JsocClient(emu.base_url) as jsoc:
        settings = make_settings(tmp_path, emu.base_url, db_url, max_chunk_records=8)
        job, _ = await repo.create_job(mirror_spec(series, segments=["magnetogram"]),
                                       notify_email=EMAIL, follow=True)
        running = Running(settings, repo)
        try:
            first = await wait_for(lambda: caught_up(repo, jsoc, job.id, series), 30,
                                   "the mirror to catch up")
            seen_first = await jsoc_records(jsoc, series, first.covered_until)
            emu.advance_clock(600)  # new records, and the late ones of the first 10 minutes
            # every slot older than the clock minus late_delay is published by now
            later = parse_time(first.jsoc_until) + 600 - late.late_delay - STEP_45S
            try:
                second = await wait_for(lambda: caught_up(repo, jsoc, job.id, series,
                                                          since=later),
                                        30, "the mirror to catch up again")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; {await describe(repo, job.id)}") from None
        finally:
            await running.stop()
        appeared_late = await jsoc_records(jsoc, series, first.covered_until) - seen_first
        assert appeared_late, "the seeded late slots should exist in the first 10 minutes"
        records = {f.record for f in await repo.list_files(job.id, limit=100_000)}
        assert appeared_late <= records  # (caught_up checked records == JSOC's at the time)
        assert parse_time(second.covered_until) > parse_time(first.covered_until)
        named = [t for c in await repo.list_chunks(job.id)
                 for t in slots_named(c.recordset) or []]
        late_names = {f"{series}[{t}][2]" for t in named}
        assert len(named) == len(late_names)  # no slot asked for twice
        assert appeared_late <= late_names and not late_names & seen_first
        each_file_served_once(emu)
        await each_record_exported_once(repo, job.id)
        assert (await repo.get_job(job.id)).state == "running"  # a mirror never finishes


async def test_mirror_resumes_after_a_week_down_in_bounded_chunks(
        tmp_path: Path, repo: Repo, db_url: str) -> None:
    series, cadence = "hmi.M_720s", 12 * 3600.0
    async with run_emulator(tmp_path / "jsoc", emails=[EMAIL], staging_delay=0.02,
                            file_size=2000, clock_start="2014.01.02_00:00:00_TAI"
                            ) as emu, JsocClient(emu.base_url) as jsoc:
        settings = make_settings(tmp_path, emu.base_url, db_url, max_chunk_records=4)
        job, _ = await repo.create_job(mirror_spec(series, cadence="12h"), notify_email=EMAIL,
                                       follow=True)
        running = Running(settings, repo)
        try:
            before = await wait_for(lambda: caught_up(repo, jsoc, job.id, series, cadence),
                                    30, "the backfill")
        finally:
            await running.stop()
        chunks_before = {c.id for c in await repo.list_chunks(job.id)}
        emu.advance_clock(7 * 86400.0)
        running = Running(settings, repo, worker_id="w2")
        try:
            week_later = parse_time(before.jsoc_until) + 7 * 86400
            after = await wait_for(lambda: caught_up(repo, jsoc, job.id, series, cadence,
                                                     since=week_later),
                                   30, "the catch-up after a week")
        finally:
            await running.stop()
        assert parse_time(after.covered_until) - parse_time(before.covered_until) == 7 * 86400
        chunks = await repo.list_chunks(job.id)
        new = sorted((c for c in chunks if c.id not in chunks_before), key=lambda c: c.seq)
        per_chunk = Counter(f.chunk_id for f in await repo.list_files(job.id, limit=1000))
        assert len(new) >= 4 and all(per_chunk[c.id] <= 4 for c in new)  # 14 records in 4s
        assert new[0].start_time == before.covered_until  # from where it stopped
        for a, b in pairwise(new):  # adjacent: no gap, no overlap
            assert parse_time(b.start_time) - parse_time(a.start_time) == a.est_records * cadence
        each_file_served_once(emu)
        await each_record_exported_once(repo, job.id)
        await _pause_and_cancel_stop_checks(repo, job.id)


async def _pause_and_cancel_stop_checks(repo: Repo, job_id: str) -> None:
    """A paused or cancelled mirror is not planned or checked any more, even when due."""
    due = datetime.now(UTC) + timedelta(days=1)
    await repo.pause_job(job_id)
    assert await repo.claim_job_to_plan("probe", now=due) is None
    await repo.resume_job(job_id)
    claim = await repo.claim_job_to_plan("probe", now=due)
    assert claim is not None and claim.job_id == job_id
    await repo.cancel_job(job_id)
    assert await repo.claim_job_to_plan("probe", now=due + timedelta(days=1)) is None


async def test_job_detail_shows_how_far_behind_the_mirror_is(tmp_path: Path,
                                                             db_url: str) -> None:
    series = "hmi.M_720s"
    start = format_tai(parse_time(datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")) - 1800)
    async with served_api(db_url, tmp_path) as api:
        reply = await api.submit({"series": series, "start": start, "follow": True,
                                  "lag": "12m", "check_interval": "0.1s"})
        assert reply.status == 202, reply.body
        job_id = reply.body["id"]
        fresh = (await api.call("GET", f"jobs/{job_id}")).body
        assert fresh["follow"] is True and fresh["behind_seconds"] is None
        settings = make_settings(tmp_path, api.jsoc_url, db_url, email=API_EMAIL)
        running = Running(settings, api.repo)

        async def checked() -> dict[str, Any] | None:
            body = (await api.call("GET", f"jobs/{job_id}")).body
            done = body["files"]["done"] and not body["chunks"]["planned"] \
                and body["covered_until"] == body["planned_until"]
            return body if body["last_check_at"] and done else None
        try:
            body = await wait_for(checked, 30, "the mirror's first check and files")
        finally:
            await running.stop()
        behind = parse_time(body["jsoc_until"]) - parse_time(body["covered_until"])
        assert body["behind_seconds"] == behind == 720.0  # caught up: exactly the 12 min lag
        assert body["next_check_at"] > body["last_check_at"]
        assert body["eta_seconds"] is None
