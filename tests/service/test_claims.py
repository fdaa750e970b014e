"""Claims on SQLite and Postgres: service order, cluster-wide limits, leases and fencing.

Concurrency tests run several workers, each with its own engine (its own connections), as
concurrent asyncio tasks against one database, like worker processes sharing it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sqlalchemy import func, select

from service.db import UNFENCED, LeaseLost
from service.db.models import EXPORT_PENDING, Export, File
from service.db.repo import Repo
from tests.service.rows import Clock, job_with_chunks, ready_export

HOST = "127.0.0.1:9"


@asynccontextmanager
async def workers(url: str, n: int, clock: Clock | None = None) -> AsyncIterator[list[Repo]]:
    """``n`` repositories, each with its own engine, as separate worker processes would have."""
    repos = [Repo.from_url(url, clock=clock) for _ in range(n)]
    try:
        yield repos
    finally:
        await asyncio.gather(*(r.close() for r in repos))


async def claim_all(repos: list[Repo], claim: Callable[[Repo, str], Awaitable[Any]],
                    rounds: int = 4) -> list[Any]:
    """Every worker tries ``rounds`` claims, all workers concurrently; returns what was won."""
    async def worker(i: int, repo: Repo) -> list[Any]:
        won = []
        for _ in range(rounds):
            result = await claim(repo, f"w{i}")
            won.extend(result if isinstance(result, list) else [result] if result else [])
        return won
    results = await asyncio.gather(*(worker(i, r) for i, r in enumerate(repos)))
    return [c for won in results for c in won]


async def pending_per_email(repo: Repo) -> dict[str, int]:
    async with repo.engine.connect() as conn:
        rows = await conn.execute(select(Export.notify_email, func.count())
                                  .where(Export.state.in_(EXPORT_PENDING))
                                  .group_by(Export.notify_email))
        return dict(rows.all())


def expected_service_order(jobs: list[tuple[str, int, int]]) -> list[str]:
    """The documented rule, simulated: highest priority first, then the job served least
    recently (never served first, then oldest job); one chunk per claim.
    ``jobs``: (job_id, priority, chunk count) in creation order."""
    left = {job: n for job, _, n in jobs}
    served: dict[str, int] = {}
    order = []
    for step in range(sum(left.values())):
        ready = [(job, prio, created) for created, (job, prio, _) in enumerate(jobs) if left[job]]
        job = min(ready, key=lambda j: (-j[1], served.get(j[0], -1), j[2]))[0]
        order.append(job)
        left[job] -= 1
        served[job] = step
    return order


async def test_priority_then_round_robin(repo: Repo, clock: Clock) -> None:
    r = Repo(repo.engine, clock=clock)
    big = await job_with_chunks(r, 6)
    clock.advance(1)  # distinct creation times: "oldest job first" decides ties
    small = await job_with_chunks(r, 2)
    clock.advance(1)
    urgent = await job_with_chunks(r, 2, priority=5)
    order = []
    while (claim := await r.claim_chunk_to_export("w1", max_pending_per_email=100)) is not None:
        order.append(claim.job_id)
        clock.advance(1)
    assert order == expected_service_order([(big, 0, 6), (small, 0, 2), (urgent, 5, 2)])
    assert order[:2] == [urgent, urgent] and small in order[2:5]  # the small job is not starved
    chunks = await r.list_chunks(big)
    assert all(c.state == "exporting" for c in chunks)


async def test_per_email_limit_holds_under_concurrent_claimers(db_url: str) -> None:
    async with workers(db_url, 3) as repos:
        setup = repos[0]
        for email in ("a@example.org", "a@example.org", "b@example.org"):
            await job_with_chunks(setup, 3, email=email)

        async def claim(r: Repo, worker: str) -> Any:
            return await r.claim_chunk_to_export(worker, max_pending_per_email=1)
        won = await claim_all(repos, claim)
        assert sorted(c.notify_email for c in won) == ["a@example.org", "b@example.org"]
        assert await pending_per_email(setup) == {"a@example.org": 1, "b@example.org": 1}

        a_claim = next(c for c in won if c.notify_email == "a@example.org")
        await setup.record_export_submitted(a_claim.export_id, request_id="JSOC_1", status=2,
                                            wait=0, lease_token=a_claim.lease_token)
        await setup.record_export_ready(a_claim.export_id, files=[],
                                        lease_token=UNFENCED)  # a's slot frees up
        won = await claim_all(repos, claim)
        assert [c.notify_email for c in won] == ["a@example.org"]

        async def claim_two(r: Repo, worker: str) -> Any:
            return await r.claim_chunk_to_export(worker, max_pending_per_email=2)
        won = await claim_all(repos, claim_two)
        assert sorted(c.notify_email for c in won) == ["a@example.org", "b@example.org"]
        assert await pending_per_email(setup) == {"a@example.org": 2, "b@example.org": 2}


async def test_per_host_limit_holds_under_concurrent_claimers(db_url: str,
                                                              clock: Clock) -> None:
    async with workers(db_url, 3, clock) as repos:
        setup = repos[0]
        job_id = await job_with_chunks(setup, 1)
        await ready_export(setup, job_id, [f"f{i}" for i in range(8)])

        async def claim(r: Repo, worker: str) -> list[Any]:
            return await r.claim_files_to_download(worker, HOST, max_per_host=2, limit=3,
                                                   lease_seconds=60)
        won = await claim_all(repos, claim)
        assert len(won) == 2 and len({c.file_id for c in won}) == 2
        assert await claim_all(repos, claim) == []
        assert await setup.finish_file(won[0].file_id, sha256="a" * 64, size=100,
                                       lease_token=won[0].lease_token)
        more = await claim_all(repos, claim)
        assert len(more) == 1  # one slot came free
        clock.advance(61)  # both remaining leases expire: their slots are free again
        taken_over = await claim_all(repos, claim)
        assert len(taken_over) == 2
        async with setup.engine.connect() as conn:
            active = await conn.scalar(select(func.count()).where(
                File.state == "downloading", File.lease_expires_at > clock.now))
        assert active == 2


async def test_abandoned_reservation_is_taken_over_and_fenced(repo: Repo, clock: Clock) -> None:
    r = Repo(repo.engine, clock=clock)
    await job_with_chunks(r, 2)
    first = await r.claim_chunk_to_export("w1", lease_seconds=30)
    assert await r.claim_chunk_to_export("w2", lease_seconds=30) is None  # email slot taken
    clock.advance(31)  # w1 died mid-submission
    second = await r.claim_chunk_to_export("w2", lease_seconds=30)
    assert second is not None and second.resumed
    assert (second.export_id, second.chunk_id) == (first.export_id, first.chunk_id)
    assert second.lease_token > first.lease_token
    with pytest.raises(LeaseLost):
        await r.record_export_submitted(first.export_id, request_id="JSOC_old",
                                        status=2, wait=5, lease_token=first.lease_token)
    assert await r.record_export_submitted(second.export_id, request_id="JSOC_new", status=2,
                                           wait=5, lease_token=second.lease_token)
    [export] = await r.list_exports(first.job_id)  # the one row, never JSOC_old
    assert (export.id, export.state, export.request_id) == (first.export_id, "submitted",
                                                            "JSOC_new")


async def test_poll_lease_expiry_and_fencing(repo: Repo, clock: Clock) -> None:
    r = Repo(repo.engine, clock=clock)
    await job_with_chunks(r, 1)
    claim = await r.claim_chunk_to_export("w1")
    await r.record_export_submitted(claim.export_id, request_id="JSOC_1", status=2, wait=0,
                                    lease_token=claim.lease_token)
    [mine] = await r.claim_exports_to_poll("w1", lease_seconds=20)
    assert await r.claim_exports_to_poll("w2") == []
    clock.advance(21)
    [theirs] = await r.claim_exports_to_poll("w2", lease_seconds=20)
    assert theirs.export_id == mine.export_id
    with pytest.raises(LeaseLost):
        await r.record_poll(mine.export_id, status=1, wait=3, lease_token=mine.lease_token)
    with pytest.raises(LeaseLost):
        await r.record_export_ready(mine.export_id, files=[], lease_token=mine.lease_token)
    assert await r.record_poll(theirs.export_id, status=1, wait=3,
                               lease_token=theirs.lease_token)


async def test_download_takeover_fences_the_old_owner(repo: Repo, clock: Clock) -> None:
    r = Repo(repo.engine, clock=clock)
    job_id = await job_with_chunks(r, 1)
    await ready_export(r, job_id, ["f"])
    [old] = await r.claim_files_to_download("w1", HOST, lease_seconds=30)
    assert await r.update_file_progress(old.file_id, 50, old.lease_token, etag='"e1"')
    clock.advance(31)
    [new] = await r.claim_files_to_download("w2", HOST, lease_seconds=30)
    assert (new.file_id, new.bytes_done, new.etag) == (old.file_id, 50, '"e1"')  # resume point
    with pytest.raises(LeaseLost):
        await r.update_file_progress(old.file_id, 80, old.lease_token)
    with pytest.raises(LeaseLost):
        await r.finish_file(old.file_id, sha256="0" * 64, size=100, lease_token=old.lease_token)
    with pytest.raises(LeaseLost):
        await r.schedule_retry(old.file_id, next_attempt_at=clock.now, error="x",
                               lease_token=old.lease_token)
    assert await r.update_file_progress(new.file_id, 90, new.lease_token)
    assert await r.finish_file(new.file_id, sha256="1" * 64, size=100,
                               lease_token=new.lease_token)
    [f] = await r.list_files(job_id)
    assert (f.state, f.bytes_done, f.sha256) == ("done", 100, "1" * 64)


async def test_release_leases_hands_work_over_at_once(repo: Repo, clock: Clock) -> None:
    r = Repo(repo.engine, clock=clock)
    await r.heartbeat("w1", hostname="h1", pid=11)
    first = await job_with_chunks(r, 2)
    await ready_export(r, first, ["f"])
    [file_claim] = await r.claim_files_to_download("w1", HOST, lease_seconds=600)
    await r.update_file_progress(file_claim.file_id, 30, file_claim.lease_token)
    reservation = await r.claim_chunk_to_export("w1", lease_seconds=600)
    assert reservation is not None
    assert await r.release_leases("w1") == 2
    [file_again] = await r.claim_files_to_download("w2", HOST)
    assert file_again.bytes_done == 30
    again = await r.claim_chunk_to_export("w2")
    assert again is not None and again.resumed and again.export_id == reservation.export_id
    [worker] = await r.list_workers()
    assert worker.id == "w1" and worker.stopped_at is not None


async def test_heartbeat_renews_leases(repo: Repo, clock: Clock) -> None:
    r = Repo(repo.engine, clock=clock)
    job_id = await job_with_chunks(r, 1)
    await ready_export(r, job_id, ["f"])
    [c] = await r.claim_files_to_download("w1", HOST, lease_seconds=30)
    clock.advance(20)
    assert await r.heartbeat("w1", hostname="h1", pid=1, holding={"files": 1},
                             renew_lease_seconds=30) == 1
    clock.advance(20)  # 40 s after the claim, 20 s after the renewal
    assert await r.claim_files_to_download("w2", HOST) == []
    assert await r.update_file_progress(c.file_id, 10, c.lease_token)
    [w] = await r.list_workers()
    assert (w.hostname, w.pid, w.holding) == ("h1", 1, {"files": 1})


async def test_paused_job_is_not_claimed(repo: Repo) -> None:
    paused = await job_with_chunks(repo, 1)
    await repo.pause_job(paused)
    assert await repo.claim_chunk_to_export("w1") is None
    await repo.resume_job(paused)
    export_id, _ = await ready_export(repo, paused, ["f"])
    await repo.pause_job(paused)
    assert await repo.claim_files_to_download("w1", HOST) == []
    assert await repo.list_download_hosts() == []
    await repo.resume_job(paused)
    assert await repo.list_download_hosts() == [HOST]
    assert export_id > 0


async def test_files_rotate_between_jobs(repo: Repo) -> None:
    big = await job_with_chunks(repo, 1)
    await ready_export(repo, big, [f"b{i}" for i in range(4)], dest="big")
    small = await job_with_chunks(repo, 1)
    await ready_export(repo, small, ["s0"], dest="small")
    served = []
    for _ in range(2):
        [c] = await repo.claim_files_to_download("w1", HOST)
        served.append(c.job_id)
        assert await repo.finish_file(c.file_id, sha256="0" * 64, size=100, lease_token=UNFENCED)
    assert served == [big, small]  # after one of big's files, the small job's turn


async def test_concurrent_creates_with_one_idempotency_key_make_one_job(db_url: str) -> None:
    async with workers(db_url, 3) as repos:
        results = await asyncio.gather(*(
            r.create_job({"n": i}, notify_email="a@example.org", idempotency_key="same")
            for i, r in enumerate(repos)))
        assert len({job.id for job, _ in results}) == 1
        assert sum(created for _, created in results) == 1
        assert len(await repos[0].list_jobs()) == 1


async def test_concurrent_finishes_close_chunk_and_job(db_url: str) -> None:
    """Files of one chunk (and chunks of one job) finishing at the same moment in different
    workers: the last one to commit must still close the chunk and the job."""
    async with workers(db_url, 4) as repos:
        setup = repos[0]
        for i in range(3):
            job_id = await job_with_chunks(setup, 2)
            await ready_export(setup, job_id, [f"a{i}", f"b{i}"], dest=job_id)
            await ready_export(setup, job_id, [f"c{i}", f"d{i}"], dest=job_id)
            claims = await setup.claim_files_to_download("w", HOST, max_per_host=4, limit=4)
            assert len(claims) == 4
            done = await asyncio.gather(*(
                r.finish_file(c.file_id, sha256="0" * 64, size=100, lease_token=c.lease_token)
                for r, c in zip(repos, claims, strict=True)))
            assert all(done)
            summary = await setup.job_summary(job_id)
            assert summary.chunks == {"done": 2} and summary.job.state == "succeeded"
