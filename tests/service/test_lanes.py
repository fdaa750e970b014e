"""Download lanes on SQLite and Postgres: batch claims as one connection, takeover after a
lease expires, group commits, counters, cross-job de-duplication, dead workers released at
once, and a file renamed into place before its commit adopted instead of fetched again."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from jsocsim import run_emulator
from service.db.repo import Repo
from service.db.repo_files import FileOutcome
from service.download.fetch import fetch_file
from service.download.paths import part_path
from service.download.verify import VerificationError
from service.stages import plan_tick, poll_tick, submit_tick
from service.stages.context import open_context
from service.stages.download import download_file
from service.stages.recorder import OutcomeRecorder
from service.stages.transfer import _link_verified
from tests.service.jobs_harness import (
    EMAIL,
    check_files_match_manifest,
    job_spec,
    make_settings,
    url_path,
    wait_for,
)
from tests.service.rows import Clock, job_with_chunks, ready_export

HOST = "127.0.0.1:9"


async def test_a_stale_outcome_does_not_lose_the_same_workers_new_lease(
        repo: Repo, clock: Clock) -> None:
    """After a database outage a lane leases again the expired files whose outcomes still
    wait in the recorder: those outcomes fail their fence when written, and that must not
    mark the new lease lost (its lane would skip the file while the heartbeat kept renewing
    it: a stall)."""
    r = Repo(repo.engine, clock=clock)
    job_id = await job_with_chunks(r, 1)
    await ready_export(r, job_id, ["a", "b"])
    recorder = OutcomeRecorder(r)
    old = await r.claim_file_batch("w1", HOST, lane="w1#1", max_files=2, lease_seconds=2)
    recorder.track(old)
    held = recorder.add(FileOutcome(old[0].file_id, "done", old[0].lease_token,
                                    sha256="0" * 64, size=100))  # the database is away
    clock.advance(3)  # ... longer than the lease
    new = await r.claim_file_batch("w1", HOST, lane="w1#2", max_files=2, lease_seconds=30)
    recorder.track(new)
    await recorder.flush()  # the database is back: the old outcome is fenced off
    assert await held is False
    assert recorder.lost == set()  # ... and the new lease of the file is not lost
    lost_elsewhere = FileOutcome(old[1].file_id, "progress", old[1].lease_token, size=10)
    recorder.leases.pop(old[1].file_id)  # as if another worker held the new lease
    assert await recorder.add(lost_elsewhere) is False
    await recorder.flush()
    assert recorder.lost == {old[1].file_id}
    outcome = recorder.add(FileOutcome(new[0].file_id, "done", new[0].lease_token,
                                       sha256="1" * 64, size=100))
    await recorder.flush()
    assert await outcome is True
    await recorder.close()

async def test_a_batch_is_one_connection_and_is_taken_over_after_its_lease(
        repo: Repo, clock: Clock) -> None:
    r = Repo(repo.engine, clock=clock)
    job_id = await job_with_chunks(r, 1)
    await ready_export(r, job_id, [f"f{i}" for i in range(6)])
    batch = await r.claim_file_batch("w1", HOST, lane="w1#1", max_per_host=1, max_files=5,
                                     lease_seconds=30)
    assert len(batch) == 5  # five files, one connection
    assert await r.claim_file_batch("w2", HOST, lane="w2#1", max_files=5) == []
    assert await r.claim_files_to_download("w2", HOST) == []  # the slot is the lane's
    more = await r.claim_file_batch("w1", HOST, lane="w1#1", max_files=5, lease_seconds=30)
    assert len(more) == 1  # the lane itself may lease its next batch
    clock.advance(31)  # w1 died: every lease of its lane expires
    taken = await r.claim_file_batch("w2", HOST, lane="w2#1", max_files=10, lease_seconds=30)
    assert sorted(c.file_id for c in taken) == sorted(c.file_id for c in batch + more)
    stale = [FileOutcome(c.file_id, "done", c.lease_token, sha256="0" * 64, size=100)
             for c in batch]
    assert await r.record_file_outcomes(stale) == [False] * 5  # fenced: w1 lost them
    fresh = [FileOutcome(c.file_id, "done", c.lease_token, sha256="1" * 64, size=100)
             for c in taken]
    assert await r.record_file_outcomes(fresh) == [True] * 6
    summary = await r.job_summary(job_id)
    assert summary.files == {"done": 6} and summary.job.state == "succeeded"


async def test_batches_respect_bytes_and_alternate_between_jobs(repo: Repo) -> None:
    big = await job_with_chunks(repo, 1)
    await ready_export(repo, big, [f"b{i}" for i in range(10)], dest="big", size=1000)
    small = await job_with_chunks(repo, 1)
    await ready_export(repo, small, ["s0", "s1"], dest="small", size=1000)
    first = await repo.claim_file_batch("w1", HOST, lane="L", max_files=100, max_bytes=3500)
    assert len(first) == 3 and {c.job_id for c in first} == {big}  # bounded by bytes
    second = await repo.claim_file_batch("w1", HOST, lane="L", max_files=100, max_bytes=3500)
    assert {c.job_id for c in second} == {small}  # the small job's turn comes next


async def test_group_commit_keeps_counters_and_closes_the_chunk(repo: Repo) -> None:
    job_id = await job_with_chunks(repo, 1)
    await ready_export(repo, job_id, ["a", "b", "c", "d"])
    a, b, c, d = await repo.claim_file_batch("w1", HOST, lane="L", max_files=4)
    later = repo.now()
    results = await repo.record_file_outcomes([
        FileOutcome(a.file_id, "progress", a.lease_token, bytes_done=40, etag='"x"'),
        FileOutcome(a.file_id, "done", a.lease_token, sha256="a" * 64, size=100),
        FileOutcome(b.file_id, "fail", b.lease_token, error="HTTP 403"),
        FileOutcome(c.file_id, "retry", c.lease_token, error="reset", next_attempt_at=later),
        FileOutcome(d.file_id, "release", d.lease_token, bytes_done=7),
    ])
    assert results == [True] * 5
    summary = await repo.job_summary(job_id)
    assert summary.files == {"done": 1, "failed": 1, "pending": 2}
    assert summary.bytes_done == 100 and summary.chunks == {"downloading": 1}
    again = await repo.claim_file_batch("w1", HOST, lane="L", max_files=4)
    assert sorted(x.file_id for x in again) == sorted([c.file_id, d.file_id])
    assert await repo.record_file_outcomes(
        [FileOutcome(x.file_id, "done", x.lease_token, sha256="c" * 64, size=50)
         for x in again]) == [True, True]
    summary = await repo.job_summary(job_id)
    assert summary.files == {"done": 3, "failed": 1} and summary.bytes_done == 200
    assert summary.chunks == {"failed": 1} and summary.job.state == "completed_with_errors"


async def test_a_file_two_jobs_want_is_fetched_once(repo: Repo) -> None:
    """Both jobs list the same content at once; the second is placed from the first."""
    same_path = await job_with_chunks(repo, 1)
    await ready_export(repo, same_path, ["x"], dest="shared")
    other_path = await job_with_chunks(repo, 1)
    await ready_export(repo, other_path, ["x"], dest="mine")
    first = await job_with_chunks(repo, 1)
    await ready_export(repo, first, ["x"], dest="shared")
    [lead] = await repo.claim_file_batch("w1", HOST, lane="L1", max_per_host=3, max_files=5)
    assert await repo.claim_file_batch("w2", HOST, lane="L2", max_per_host=3,
                                       max_files=5) == []  # the twins wait for it
    assert await repo.finish_file(lead.file_id, sha256="f" * 64, size=100,
                                  lease_token=lead.lease_token)
    twins = {j: (await repo.list_files(j))[0] for j in (same_path, other_path, first)}
    done_in_place = [f for f in twins.values() if f.state == "done"]
    assert len(done_in_place) == 2 and {f.dest_path for f in done_in_place} == {"shared/x.fits"}
    assert (await repo.job_summary(same_path if lead.job_id != same_path else first)
            ).job.state == "succeeded"
    copy = twins[other_path]
    assert (copy.state, copy.host, copy.source_path) == ("pending", "local", "shared/x.fits")
    assert await repo.claim_file_batch("w2", HOST, lane="L2", max_files=5) == []
    [local] = await repo.claim_file_batch("w2", "local", lane="L3", max_files=5)
    assert local.file_id == copy.id


async def test_dead_worker_on_this_host_is_released_at_once(repo: Repo, clock: Clock) -> None:
    r = Repo(repo.engine, clock=clock)
    await r.heartbeat("old", hostname="h1", pid=4242, pid_space="pid:[1]")
    await r.heartbeat("far", hostname="h2", pid=4242, pid_space="pid:[1]")
    await r.heartbeat("boxed", hostname="h1", pid=4242, pid_space="pid:[2]")  # a container
    job_id = await job_with_chunks(r, 1)
    await ready_export(r, job_id, ["a", "b"])
    await r.claim_file_batch("old", HOST, lane="old#1", max_files=1, lease_seconds=600)
    await r.claim_file_batch("far", HOST, lane="far#1", max_per_host=2, max_files=1,
                             lease_seconds=600)
    dead = await r.reap_dead_workers("new", hostname="h1", is_alive=lambda pid: False,
                                     stale_after=120, pid_space="pid:[1]")
    assert dead == ["old"]  # other hosts' and other pid namespaces' workers: not by a pid
    assert len(await r.claim_file_batch("new", HOST, lane="new#1", max_per_host=2,
                                        max_files=5)) == 1
    clock.advance(121)  # "far" and "boxed" have been silent for two leases
    assert sorted(await r.reap_dead_workers("new", hostname="h1", is_alive=lambda pid: True,
                                            stale_after=120)) == ["boxed", "far"]


async def test_a_file_renamed_before_its_commit_is_adopted_not_fetched(
        tmp_path: Path, repo: Repo, db_url: str) -> None:
    """The disk is the journal: the process died between rename and commit."""
    async with run_emulator(tmp_path / "jsoc", emails=[EMAIL], staging_delay=0.05,
                            file_size=4000) as emu:
        settings = make_settings(tmp_path, emu.base_url, db_url, max_chunk_records=4)
        job, _ = await repo.create_job(job_spec(2), notify_email=EMAIL)
        async with open_context(settings, repo, asyncio.Event(), "w1") as ctx:
            await _until_files_listed(ctx, repo)
            [host] = await repo.list_download_hosts()
            claims = await repo.claim_file_batch("w1", host, lane="w1#1", max_files=5)
            assert len(claims) == 2
            for claim in claims:  # downloaded and renamed, but never recorded
                await fetch_file(ctx.session, claim.url, settings.download_dir / claim.dest_path)
            assert await repo.release_leases("w1") == 2  # the worker is gone
            for claim in await repo.claim_file_batch("w2", host, lane="w2#1", max_files=5):
                await download_file(ctx, claim)
        files = await repo.list_files(job.id)
        assert {f.state for f in files} == {"done"}
        check_files_match_manifest(emu, settings.download_dir, files)
        requests = emu.stats()["files"]
        assert all(requests[url_path(f.url)]["requests"] == 1 for f in files)
        assert (await repo.get_job(job.id)).state == "succeeded"


async def _until_files_listed(ctx: Any, repo: Repo) -> None:
    assert await plan_tick(ctx) and await submit_tick(ctx)

    async def listed() -> bool:
        await poll_tick(ctx)
        while ctx.tasks:
            await asyncio.gather(*ctx.tasks)
        return bool(await repo.list_download_hosts())
    await wait_for(listed, 10, "the export's files to be listed")


@pytest.mark.unit
def test_a_stored_copy_is_checked_as_fits_before_it_is_linked(tmp_path: Path) -> None:
    """The link is made under a .part name; it is still judged as the .fits it will become."""
    stored = tmp_path / "stored.fits"
    stored.write_bytes(b"SIMPLE  =                    T" + b" " * 50 + b"not a header" * 300)
    dest = tmp_path / "job" / "copy.fits"
    with pytest.raises(VerificationError):
        _link_verified(stored, dest, None)
    assert not dest.exists() and not part_path(dest).exists()
