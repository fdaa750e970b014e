"""Repository behaviour on SQLite and Postgres: jobs, guards, planning, exports, files, dedup."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from service.db import UNFENCED
from service.db.engine import (
    DatabaseURLError,
    default_database_url,
    make_engine,
    parse_database_url,
)
from service.db.models import LOCAL_HOST
from service.db.repo import InvalidTransition, LeaseLost, NotFound, Repo
from service.db.repo_base import MAX_EVENTS_PER_JOB
from tests.service.rows import Clock, file_specs, job_with_chunks, ready_export


async def test_create_job_with_idempotency_key(repo: Repo) -> None:
    spec = {"series": "hmi.M_45s", "start": "2024-01-01T00:00:00Z"}
    first, created = await repo.create_job(spec, notify_email="a@example.org", priority=3,
                                           idempotency_key="req-1")
    again, created_again = await repo.create_job({"other": 1}, notify_email="b@example.org",
                                                 idempotency_key="req-1")
    plain, _ = await repo.create_job(spec, notify_email="a@example.org")
    assert created and not created_again
    assert again.id == first.id and again.spec == spec
    assert plain.id != first.id
    job = await repo.get_job(first.id)
    assert job is not None and job.state == "queued" and job.priority == 3
    assert job.created_at.utcoffset() == timedelta(0)
    assert {j.id for j in await repo.list_jobs()} == {first.id, plain.id}
    assert await repo.get_job("nope") is None


async def test_create_job_rejects_bad_input(repo: Repo) -> None:
    with pytest.raises(ValueError, match="notify_email"):
        await repo.create_job({}, notify_email="not-an-email")
    with pytest.raises(ValueError, match="priority"):
        await repo.create_job({}, notify_email="a@example.org", priority="high")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown job state 'bogus'"):
        await repo.list_jobs("bogus")


async def test_list_jobs_filters_and_pages(repo: Repo) -> None:
    ids = [(await repo.create_job({"n": i}, notify_email="a@example.org"))[0].id
           for i in range(3)]
    await repo.cancel_job(ids[1])
    assert [j.id for j in await repo.list_jobs("cancelled")] == [ids[1]]
    assert {j.id for j in await repo.list_jobs(["queued"])} == {ids[0], ids[2]}
    pages = [j.id for j in await repo.list_jobs(limit=2)] + \
        [j.id for j in await repo.list_jobs(limit=2, offset=2)]
    assert sorted(pages) == sorted(ids)


async def test_state_guards(repo: Repo) -> None:
    job_id = await job_with_chunks(repo, 1)
    assert (await repo.pause_job(job_id)).state == "paused"
    assert (await repo.resume_job(job_id)).state == "running"
    with pytest.raises(InvalidTransition, match="running"):
        await repo.delete_job(job_id)
    assert (await repo.cancel_job(job_id)).state == "cancelled"
    assert (await repo.cancel_job(job_id)).state == "cancelled"  # repeat is harmless
    for action in (repo.resume_job, repo.pause_job, repo.retry_job, repo.start_job):
        with pytest.raises(InvalidTransition, match="it is cancelled"):
            await action(job_id)
    with pytest.raises(InvalidTransition):
        await repo.add_chunks(job_id, [{"seq": 5, "recordset": "x"}])
    await repo.delete_job(job_id)
    assert await repo.get_job(job_id) is None
    async with repo.engine.connect() as conn:  # children went with it (foreign keys on)
        assert (await conn.execute(text("SELECT count(*) FROM chunks"))).scalar() == 0
    with pytest.raises(NotFound):
        await repo.cancel_job(job_id)
    with pytest.raises(NotFound):
        await repo.job_summary(job_id)


async def test_add_chunks_is_insert_or_ignore(repo: Repo) -> None:
    job, _ = await repo.create_job({}, notify_email="a@example.org")
    assert await repo.add_chunks(job.id, [{"seq": i, "recordset": f"r{i}"} for i in range(3)]) == 3
    again = [{"seq": i, "recordset": f"changed{i}"} for i in range(1, 5)]
    assert await repo.add_chunks(job.id, again) == 2
    chunks = await repo.list_chunks(job.id)
    assert [(c.seq, c.recordset) for c in chunks] == [
        (0, "r0"), (1, "r1"), (2, "r2"), (3, "changed3"), (4, "changed4")]
    with pytest.raises(ValueError, match="unknown field"):
        await repo.add_chunks(job.id, [{"seq": 9, "recordset": "x", "bogus": 1}])


async def test_planning_lease_and_cursor(repo: Repo, clock: Clock) -> None:
    timed = Repo(repo.engine, clock=clock)
    job, _ = await repo.create_job({}, notify_email="a@example.org")
    plan = await timed.claim_job_to_plan("w1", lease_seconds=60, max_ahead=2)
    assert plan is not None and plan.job_id == job.id and plan.next_seq == 0
    assert (await repo.get_job(job.id)).state == "running"
    assert await timed.claim_job_to_plan("w2") is None  # leased to w1
    await timed.add_chunks(job.id, [{"seq": 0, "recordset": "a"}, {"seq": 1, "recordset": "b"}])
    assert await timed.advance_plan(job.id, planned_until="t1", next_seq=2, plan_done=False,
                                    lease_token=plan.lease_token)
    assert await timed.claim_job_to_plan("w2", max_ahead=2) is None  # two chunks waiting
    again = await timed.claim_job_to_plan("w2", max_ahead=3)
    assert again is not None and again.planned_until == "t1" and again.next_seq == 2
    with pytest.raises(LeaseLost):  # w1's token is stale
        await timed.advance_plan(job.id, planned_until="x", next_seq=9, plan_done=True,
                                 lease_token=plan.lease_token)
    clock.advance(120)  # w2's lease expires: another worker may plan
    third = await timed.claim_job_to_plan("w3", max_ahead=3)
    assert third is not None and third.lease_token > again.lease_token


async def test_empty_fully_planned_job_succeeds(repo: Repo) -> None:
    job, _ = await repo.create_job({}, notify_email="a@example.org")
    plan = await repo.claim_job_to_plan("w1")
    assert await repo.advance_plan(job.id, planned_until="end", next_seq=0, plan_done=True,
                                   lease_token=plan.lease_token)
    assert (await repo.get_job(job.id)).state == "succeeded"


async def test_export_lifecycle_to_success(repo: Repo, clock: Clock) -> None:
    r = Repo(repo.engine, clock=clock)
    job_id = await job_with_chunks(r, 1)
    claim = await r.claim_chunk_to_export("w1")
    assert claim is not None and claim.chunk.recordset == "hmi.M_45s[0]" and not claim.resumed
    assert await r.record_export_submitted(claim.export_id, request_id="JSOC_20250101_001",
                                           status=2, wait=10, lease_token=claim.lease_token,
                                           method="url", protocol="fits")
    export = await r.get_export(claim.export_id)
    assert export is not None and export.request_id == "JSOC_20250101_001"
    assert await r.get_export(claim.export_id + 1000) is None
    assert await r.claim_exports_to_poll("w1") == []  # not due for 10 s
    clock.advance(10)
    [poll] = await r.claim_exports_to_poll("w1")
    assert poll.request_id == "JSOC_20250101_001" and poll.polls == 0
    assert await r.record_poll(poll.export_id, status=1, wait=5, lease_token=poll.lease_token)
    clock.advance(5)
    [poll] = await r.claim_exports_to_poll("w1")
    assert poll.polls == 1
    todo = await r.record_export_ready(poll.export_id, files=file_specs(["f1", "f2"], size=100),
                                       index={"status": "0"}, lease_token=poll.lease_token)
    assert todo == 2
    claims = await r.claim_files_to_download("w1", "127.0.0.1:9", max_per_host=2, limit=5)
    assert sorted(c.dest_path for c in claims) == ["job/f1.fits", "job/f2.fits"]
    assert sorted(c.file_key for c in claims) == ["k:f1", "k:f2"]
    assert await r.update_file_progress(claims[0].file_id, 60, claims[0].lease_token)
    summary = await r.job_summary(job_id)
    assert summary.files == {"downloading": 2}
    assert (summary.bytes_done, summary.bytes_expected) == (60, 200)
    assert summary.chunks == {"downloading": 1} and summary.exports == {"ready": 1}
    for c in claims:
        assert await r.finish_file(c.file_id, sha256="ab" * 32, size=100,
                                   lease_token=c.lease_token)
    summary = await r.job_summary(job_id)
    assert summary.job.state == "succeeded" and summary.chunks == {"done": 1}
    assert summary.files == {"done": 2} and summary.bytes_done == 200


async def test_expired_export_replans_chunk_and_keeps_progress(repo: Repo) -> None:
    job_id = await job_with_chunks(repo, 1)
    export_id, _chunk_id = await ready_export(repo, job_id, ["f1", "f2"])
    [c1, c2] = await repo.claim_files_to_download("w1", "127.0.0.1:9", max_per_host=2, limit=2)
    assert await repo.finish_file(c1.file_id, sha256="0" * 64, size=100,
                                  lease_token=c1.lease_token)
    assert await repo.update_file_progress(c2.file_id, 40, c2.lease_token)
    assert await repo.mark_export_expired(export_id, error="status 5")
    assert not await repo.mark_export_expired(export_id)  # only once
    with pytest.raises(LeaseLost):  # lease revoked
        await repo.update_file_progress(c2.file_id, 50, c2.lease_token)
    [chunk] = await repo.list_chunks(job_id)
    assert chunk.state == "planned"
    assert await repo.claim_files_to_download("w1", "127.0.0.1:9") == []  # no ready export
    await ready_export(repo, job_id, ["f1", "f2"], host="127.0.0.1:10")  # re-export: new URLs
    files = {f.dest_path: f for f in await repo.list_files(job_id)}
    assert len(files) == 2
    assert files["job/f1.fits"].state == "done" and "127.0.0.1:9" in files["job/f1.fits"].url
    f2 = files["job/f2.fits"]
    assert (f2.state, f2.bytes_done, f2.host) == ("pending", 40, "127.0.0.1:10")
    [again] = await repo.claim_files_to_download("w2", "127.0.0.1:10")
    assert again.bytes_done == 40 and again.file_id == c2.file_id


async def test_split_chunk_on_status_3(repo: Repo) -> None:
    job_id = await job_with_chunks(repo, 1)
    claim = await repo.claim_chunk_to_export("w1")
    halves = [{"recordset": "hmi.M_45s[0a]", "est_bytes": 1}, {"recordset": "hmi.M_45s[0b]"}]
    ids = await repo.split_chunk(claim.chunk_id, halves, lease_token=claim.lease_token)
    assert len(ids) == 2
    assert await repo.split_chunk(claim.chunk_id, halves, lease_token=UNFENCED) == ids  # idempotent
    chunks = {c.id: c for c in await repo.list_chunks(job_id)}
    assert chunks[claim.chunk_id].state == "split"
    assert [(chunks[i].seq, chunks[i].part, chunks[i].parent_id) for i in ids] == [
        (0, "0", claim.chunk_id), (0, "1", claim.chunk_id)]
    [export] = await repo.list_exports(job_id)
    assert (export.state, export.jsoc_status) == ("error", 3)
    first = await repo.claim_chunk_to_export("w1")  # the email slot is free again
    assert first is not None
    assert (first.chunk.recordset, first.chunk.part) == ("hmi.M_45s[0a]", "0")


async def test_fail_export_retry_then_permanent(repo: Repo, clock: Clock) -> None:
    r = Repo(repo.engine, clock=clock)
    job_id = await job_with_chunks(r, 1)
    claim = await r.claim_chunk_to_export("w1")
    retry_at = clock.now + timedelta(seconds=60)
    assert await r.fail_export(claim.export_id, error="HTTP 503", retry_at=retry_at,
                               lease_token=claim.lease_token)
    [chunk] = await r.list_chunks(job_id)
    assert (chunk.state, chunk.attempts) == ("planned", 1)
    assert await r.claim_chunk_to_export("w1") is None  # not before retry_at
    clock.advance(60)
    claim = await r.claim_chunk_to_export("w1")
    assert claim is not None
    assert await r.fail_export(claim.export_id, error="status 4: bad series", jsoc_status=4,
                               lease_token=UNFENCED)
    summary = await r.job_summary(job_id)
    assert summary.job.state == "failed" and summary.chunks == {"failed": 1}
    assert any("bad series" in e.message for e in summary.recent_events)


async def test_failed_file_then_retry_job(repo: Repo) -> None:
    job_id = await job_with_chunks(repo, 2)
    await ready_export(repo, job_id, ["a"])
    await ready_export(repo, job_id, ["b"])
    [ca] = await repo.claim_files_to_download("w1", "127.0.0.1:9")
    assert await repo.fail_file(ca.file_id, "HTTP 404", lease_token=ca.lease_token)
    [cb] = await repo.claim_files_to_download("w1", "127.0.0.1:9")
    assert await repo.finish_file(cb.file_id, sha256="1" * 64, size=100, lease_token=UNFENCED)
    assert (await repo.get_job(job_id)).state == "completed_with_errors"
    job = await repo.retry_job(job_id)
    assert job.state == "running" and job.finished_at is None
    failed = next(f for f in await repo.list_files(job_id) if f.id == ca.file_id)
    assert (failed.state, failed.attempts, failed.error) == ("pending", 0, None)
    [again] = await repo.claim_files_to_download("w1", "127.0.0.1:9")
    assert await repo.finish_file(again.file_id, sha256="2" * 64, size=100, lease_token=UNFENCED)
    assert (await repo.get_job(job_id)).state == "succeeded"


async def test_schedule_retry_defers_file(repo: Repo, clock: Clock) -> None:
    r = Repo(repo.engine, clock=clock)
    job_id = await job_with_chunks(r, 1)
    await ready_export(r, job_id, ["a"])
    [c] = await r.claim_files_to_download("w1", "127.0.0.1:9")
    assert await r.schedule_retry(c.file_id, next_attempt_at=clock.now + timedelta(seconds=30),
                                  error="reset", bytes_done=70, lease_token=c.lease_token)
    assert await r.claim_files_to_download("w1", "127.0.0.1:9") == []
    clock.advance(30)
    [c] = await r.claim_files_to_download("w1", "127.0.0.1:9")
    assert (c.bytes_done, c.attempts) == (70, 1)


async def test_stored_files_are_never_fetched_again(repo: Repo) -> None:
    first = await job_with_chunks(repo, 1)
    await ready_export(repo, first, ["x"])
    [c] = await repo.claim_files_to_download("w1", "127.0.0.1:9")
    assert await repo.finish_file(c.file_id, sha256="f" * 64, size=100, lease_token=UNFENCED)
    stored = await repo.get_stored_file("k:x")
    assert stored is not None and (stored.path, stored.size) == ("job/x.fits", 100)

    same_place = await job_with_chunks(repo, 1)
    await ready_export(repo, same_place, ["x", "y"])
    files = {f.dest_path: f for f in await repo.list_files(same_place)}
    assert (files["job/x.fits"].state, files["job/x.fits"].sha256) == ("done", "f" * 64)
    assert files["job/y.fits"].state == "pending"

    elsewhere = await job_with_chunks(repo, 1)
    await ready_export(repo, elsewhere, ["x"], dest="other")
    [f] = await repo.list_files(elsewhere)
    assert (f.state, f.host, f.source_path) == ("pending", LOCAL_HOST, "job/x.fits")
    network = await repo.claim_files_to_download("w1", "127.0.0.1:9", limit=10)
    assert f.id not in {c.file_id for c in network}
    [local] = await repo.claim_files_to_download("w1", LOCAL_HOST)
    assert local.file_id == f.id and local.source_path == "job/x.fits"


async def test_forget_stored_file_falls_back_to_url(repo: Repo) -> None:
    first = await job_with_chunks(repo, 1)
    await ready_export(repo, first, ["x"])
    [c] = await repo.claim_files_to_download("w1", "127.0.0.1:9")
    assert await repo.finish_file(c.file_id, sha256="f" * 64, size=100, lease_token=UNFENCED)
    second = await job_with_chunks(repo, 1)
    await ready_export(repo, second, ["x"], dest="copy")
    assert await repo.forget_stored_file("k:x") == 1
    [f] = await repo.list_files(second)
    assert (f.host, f.source_path) == ("127.0.0.1:9", None)


async def test_cancel_closes_open_work(repo: Repo) -> None:
    job_id = await job_with_chunks(repo, 2)
    await ready_export(repo, job_id, ["a"])
    [c] = await repo.claim_files_to_download("w1", "127.0.0.1:9")
    reserved = await repo.claim_chunk_to_export("w1")
    assert reserved is not None
    await repo.cancel_job(job_id)
    summary = await repo.job_summary(job_id)
    assert summary.files == {"skipped": 1}
    assert summary.chunks == {"cancelled": 2}
    assert summary.exports == {"ready": 1, "error": 1}  # the pending one is closed
    with pytest.raises(LeaseLost):
        await repo.update_file_progress(c.file_id, 10, c.lease_token)
    other = await job_with_chunks(repo, 1)  # same email: its slot was given back
    assert (await repo.claim_chunk_to_export("w1")).job_id == other


async def test_job_events_are_bounded(repo: Repo) -> None:
    job_id = await job_with_chunks(repo, 1, start=False)
    for i in range(MAX_EVENTS_PER_JOB + 7):
        await repo.add_event(job_id, "probe", f"event {i}")
    events = (await repo.job_summary(job_id, events=1000)).recent_events
    assert len(events) == MAX_EVENTS_PER_JOB
    assert events[0].message == f"event {MAX_EVENTS_PER_JOB + 6}"


async def test_bad_file_listing_is_rejected_clearly(repo: Repo) -> None:
    job_id = await job_with_chunks(repo, 1)
    claim = await repo.claim_chunk_to_export("w1")
    with pytest.raises(ValueError, match="missing \\['dest_path'\\]"):
        await repo.record_export_ready(claim.export_id, files=[{"record": "r", "url": "http://h/x"}],
                                       lease_token=UNFENCED)
    with pytest.raises(ValueError, match="not an absolute"):
        await repo.record_export_ready(claim.export_id, files=[
            {"record": "r", "url": "/x", "dest_path": "d"}], lease_token=UNFENCED)
    [export] = await repo.list_exports(job_id)
    assert export.state == "reserving"  # nothing was changed


async def test_sqlite_engine_settings_and_immediate_writes(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "jsoc-bulk.db"
    assert default_database_url(path.parent) == f"sqlite+aiosqlite:///{path}"
    engine = make_engine(default_database_url(path.parent))  # creates the directory
    try:
        async with engine.connect() as conn:
            pragmas = [(await conn.exec_driver_sql(f"PRAGMA {p}")).scalar()
                       for p in ("journal_mode", "foreign_keys", "busy_timeout")]
        assert pragmas == ["wal", 1, 30000]
        async with engine.begin() as conn:
            await conn.execute(text("SELECT 1"))  # only a read, yet the write lock is held
            other = sqlite3.connect(path, timeout=0)
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
            other.close()
    finally:
        await engine.dispose()


@pytest.mark.unit
def test_database_url_checks() -> None:
    assert parse_database_url("postgresql://u@h/db").drivername == "postgresql+asyncpg"
    assert parse_database_url("sqlite:///x.db").drivername == "sqlite+aiosqlite"
    for bad in ("mysql://u@h/db", "sqlite://", "not a url"):
        with pytest.raises(DatabaseURLError, match="expected sqlite"):
            parse_database_url(bad)


async def test_timestamps_are_utc_aware_and_naive_ones_refused(repo: Repo) -> None:
    job_id = await job_with_chunks(repo, 1)
    claim = await repo.claim_chunk_to_export("w1")
    with pytest.raises(ValueError, match="timezone-aware"):
        await repo.fail_export(claim.export_id, error="x", retry_at=datetime(2030, 1, 1),
                               lease_token=UNFENCED)
    [export] = await repo.list_exports(job_id)
    assert export.created_at.utcoffset() == timedelta(0) and export.state == "reserving"


async def test_quick_export_goes_straight_to_ready(repo: Repo) -> None:
    job_id = await job_with_chunks(repo, 1)
    claim = await repo.claim_chunk_to_export("w1")
    todo = await repo.record_export_ready(claim.export_id, files=file_specs(["q"]),
                                          lease_token=claim.lease_token, request_id="",
                                          method="url_quick", protocol="as-is")
    assert todo == 1
    [export] = await repo.list_exports(job_id)
    assert (export.state, export.method, export.protocol) == ("ready", "url_quick", "as-is")
    assert export.expires_at - export.ready_at == timedelta(days=7)
    [f] = await repo.list_files(job_id)
    assert f.file_key == "k:q" and f.host == "127.0.0.1:9"
