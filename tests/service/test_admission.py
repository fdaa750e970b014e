"""The API's share of the event loop (``LoopBudget``, ``Timed``) and shared status reads
(``SharedReads``): unit behaviour, and a served API that keeps to a budget still answering
every kind of response (JSON, problem, dashboard page) and never serving a status from
before the API's own change to the job."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from service.api.admission import LoopBudget, Timed
from service.api.app import running_api
from service.api.shared_reads import SharedReads
from service.db.repo import Repo
from service.settings import Settings
from tests.service.api_harness import SPEC, served_api


class Computations:
    """A compute function for SharedReads that counts its calls and can be held open."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self) -> bytes:
        self.calls += 1
        n = self.calls
        await self.release.wait()
        return f"body {n}".encode()


async def test_concurrent_reads_share_one_computation_and_then_its_body() -> None:
    reads, compute = SharedReads(fresh_seconds=60), Computations()
    compute.release.clear()
    waiting = [asyncio.create_task(reads.get("job", compute)) for _ in range(5)]
    await asyncio.sleep(0.01)
    compute.release.set()
    assert await asyncio.gather(*waiting) == [b"body 1"] * 5
    assert await reads.get("job", compute) == b"body 1"  # fresh: kept
    assert compute.calls == 1
    assert await reads.get("other", compute) == b"body 2"  # one body per key


async def test_a_body_is_recomputed_once_stale() -> None:
    reads, compute = SharedReads(fresh_seconds=0.05), Computations()
    assert await reads.get("job", compute) == b"body 1"
    await asyncio.sleep(0.06)
    assert await reads.get("job", compute) == b"body 2"


async def test_forget_drops_the_body_and_the_computation_in_flight() -> None:
    reads, compute = SharedReads(fresh_seconds=60), Computations()
    assert await reads.get("job", compute) == b"body 1"
    reads.forget("job")
    compute.release.clear()
    before_change = asyncio.create_task(reads.get("job", compute))  # computation 2
    await asyncio.sleep(0.01)
    reads.forget("job")  # the job changed while 2 was computed: nobody else gets it
    after_change = asyncio.create_task(reads.get("job", compute))  # computation 3
    await asyncio.sleep(0.01)
    compute.release.set()
    assert await before_change == b"body 2"
    assert await after_change == b"body 3"
    assert await reads.get("job", compute) == b"body 3"  # 3 is kept, 2 was not
    assert compute.calls == 3


async def test_a_failed_computation_is_not_kept() -> None:
    reads, calls = SharedReads(fresh_seconds=60), []

    async def failing() -> bytes:
        calls.append(1)
        raise LookupError("database said no")

    for _ in range(2):
        with pytest.raises(LookupError, match="database said no"):
            await reads.get("job", failing)
    assert len(calls) == 2


async def test_bodies_kept_are_bounded() -> None:
    reads, compute = SharedReads(fresh_seconds=60, max_bodies=2), Computations()
    for key in ("a", "b", "c"):
        await reads.get(key, compute)
    assert await reads.get("c", compute) == b"body 3"  # kept
    assert await reads.get("a", compute) == b"body 4"  # the oldest made room
    assert compute.calls == 4


async def test_timed_counts_the_steps_not_the_waits() -> None:
    ticks = [0.0]

    async def handler() -> str:
        ticks[0] += 1  # one unit of work
        await asyncio.sleep(0.01)  # meanwhile other work takes 100 units
        ticks[0] += 2
        return "answer"

    async def other_work() -> None:
        await asyncio.sleep(0.005)
        ticks[0] += 100

    timed = Timed(handler(), clock=lambda: ticks[0])
    answer, _ = await asyncio.gather(timed, other_work())
    assert answer == "answer" and timed.seconds == 3


async def test_timed_hands_on_errors_and_cancellation() -> None:
    async def failing() -> None:
        await asyncio.sleep(0)
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        await Timed(failing())
    caught = []

    async def waiting() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            caught.append("cancelled")
            raise

    async def run_timed() -> None:
        await Timed(waiting())

    task = asyncio.create_task(run_timed())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert caught == ["cancelled"]


async def test_the_budget_makes_requests_wait_out_its_debt() -> None:
    budget = LoopBudget(share=0.5, burst=0.01)
    started = time.monotonic()
    await budget.wait()  # within the burst: at once
    assert time.monotonic() - started < 0.5
    budget.charge(0.04)  # 0.03 s in debt: 0.06 s at half the loop
    started = time.monotonic()
    await budget.wait()
    assert time.monotonic() - started >= 0.05
    assert budget.level >= 0


def test_the_budget_refuses_a_share_outside_0_to_1() -> None:
    for share in (0, 1.5):
        with pytest.raises(ValueError, match="share must be in"):
            LoopBudget(share=share)


async def test_a_status_read_never_predates_the_apis_own_change(db_url: str,
                                                                tmp_path: Path) -> None:
    async with served_api(db_url, tmp_path) as api:
        job_id = (await api.submit()).body["id"]
        assert (await api.call("GET", f"jobs/{job_id}")).body["state"] == "queued"
        await api.call("POST", f"jobs/{job_id}/pause")
        assert (await api.call("GET", f"jobs/{job_id}")).body["state"] == "paused"
        await api.call("POST", f"jobs/{job_id}/resume")
        assert (await api.call("GET", f"jobs/{job_id}")).body["state"] in ("queued", "running")
        await api.call("POST", f"jobs/{job_id}/cancel")
        assert (await api.call("GET", f"jobs/{job_id}")).body["state"] == "cancelled"
        assert (await api.call("DELETE", f"jobs/{job_id}")).status == 200
        assert (await api.call("GET", f"jobs/{job_id}")).status == 404


async def test_an_api_within_a_loop_budget_answers_every_kind_of_response(
        db_url: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=db_url,
                        jsoc_url="http://127.0.0.1:9/", email="a@example.org")
    repo = Repo.from_url(db_url)

    async def no_lookup(series: str) -> None:
        raise ValueError("no lookups here")  # the detail's recordset is then null

    try:
        async with running_api(settings, repo, port=0, shares_loop=True,
                               series_lookup=no_lookup) as base, \
                aiohttp.ClientSession() as http:
            job, _ = await repo.create_job(SPEC, notify_email="a@example.org")
            for _ in range(50):  # well past the burst: requests wait, none fails
                async with http.get(f"{base}api/v1/jobs/{job.id}") as resp:
                    assert resp.status == 200 and (await resp.json())["id"] == job.id
            async with http.get(f"{base}api/v1/jobs/nope") as resp:
                assert resp.status == 404
                assert resp.content_type == "application/problem+json"
            async with http.get(base) as resp:
                assert resp.status == 200 and "<html" in (await resp.text()).lower()
            async with http.get(f"{base}api/v1/health") as resp:
                assert resp.status == 200 and (await resp.json())["database"] == "ok"
    finally:
        await repo.close()
