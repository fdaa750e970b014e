"""Distance and staging cost: per-request latency (CGIs, files, ranges, 416s), staging time
that grows with records and MB, the site-wide staging queue, and the instant url_quick path."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from jsocsim.config import JSOC_STAGING
from jsocsim.server import Emulator, run_emulator
from tests.emulator.helpers import EMAIL, OTHER, m45, segment_paths

LATENCY = 0.15
SLACK = 5.0  # generous upper bound on a loaded machine


@asynccontextmanager
async def session_on(tmp_path: Path, **options: Any) -> AsyncIterator[
        tuple[Emulator, aiohttp.ClientSession, list[int]]]:
    """An emulator and one keep-alive connection to it; the list counts new connections."""
    created: list[int] = []
    trace = aiohttp.TraceConfig()

    async def on_create(*_: Any) -> None:
        created.append(1)

    trace.on_connection_create_end.append(on_create)
    options = {"emails": [EMAIL, OTHER], "staging_delay": 0.05, **options}
    async with run_emulator(tmp_path / "jsoc", **options) as emu, aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1), trace_configs=[trace]) as session:
        yield emu, session, created


async def timed(call: Awaitable[Any]) -> tuple[Any, float]:
    """(result, seconds it took)."""
    began = time.monotonic()
    result = await call
    return result, time.monotonic() - began


async def fetch(session: aiohttp.ClientSession, url: str, **params: str) -> dict[str, Any]:
    """A jsoc_fetch call (GET) as JSON."""
    async with session.get(url + "cgi-bin/ajax/jsoc_fetch", params=params) as resp:
        assert resp.status == 200
        return await resp.json(content_type=None)


async def export(session: aiohttp.ClientSession, emu: Emulator, ds: str, email: str = EMAIL,
                 method: str = "url", protocol: str = "fits") -> dict[str, Any]:
    """exp_request for `ds`."""
    return await fetch(session, emu.base_url, op="exp_request", ds=ds, notify=email,
                       method=method, protocol=protocol)


async def status(session: aiohttp.ClientSession, emu: Emulator, requestid: str) -> int:
    """exp_status of `requestid` (as an int)."""
    reply = await fetch(session, emu.base_url, op="exp_status", requestid=requestid)
    return int(reply["status"])


async def poll_done(session: aiohttp.ClientSession, emu: Emulator, requestid: str,
                    timeout: float = 20.0) -> float:
    """Poll until status 0 (with a deadline); the monotonic time it was first seen."""
    deadline = time.monotonic() + timeout
    while (code := await status(session, emu, requestid)) != 0:
        assert code in (1, 2) and time.monotonic() < deadline, code
        await asyncio.sleep(0.01)
    return time.monotonic()


# ---- latency -------------------------------------------------------------------------------
async def test_latency_delays_cgis_files_ranges_and_416s(tmp_path: Path) -> None:
    async with session_on(tmp_path, latency=LATENCY) as (emu, session, created):
        paths, took = await timed(segment_paths(emu.base_url, session))
        assert LATENCY <= took < SLACK
        url = emu.base_url + paths[0].lstrip("/")

        async def get(headers: dict[str, str]) -> tuple[int, bytes]:
            async with session.get(url, headers=headers) as resp:
                return resp.status, await resp.read()

        (code, body), took = await timed(get({}))
        assert code == 200 and LATENCY <= took < SLACK
        (code, part), took = await timed(get({"Range": "bytes=100-"}))
        assert code == 206 and part == body[100:] and LATENCY <= took < SLACK
        (code, _), took = await timed(get({"Range": f"bytes={len(body)}-"}))
        assert code == 416 and LATENCY <= took < SLACK
        assert len(created) == 1  # every request went over the one keep-alive connection


async def test_latency_does_not_block_the_event_loop(tmp_path: Path) -> None:
    latency, calls = 0.4, 5
    async with run_emulator(tmp_path / "jsoc", emails=[EMAIL], latency=latency) as emu, \
            aiohttp.ClientSession() as session:
        url = emu.base_url + "cgi-bin/ajax/checkAddress.sh"

        async def check() -> int:
            async with session.get(url, params={"address": EMAIL, "checkonly": "1"}) as resp:
                return (await resp.json(content_type=None))["status"]

        codes, took = await timed(asyncio.gather(*(check() for _ in range(calls))))
        assert codes == [2] * calls
        assert latency <= took < latency * calls * 0.8  # overlapping waits, not one after another


async def test_latency_and_staging_change_at_run_time(tmp_path: Path) -> None:
    async with session_on(tmp_path) as (emu, session, _):
        control = emu.base_url + "_sim/config"
        async with session.post(control, json={"latency": 0.2, "staging_slots": 2}) as resp:
            assert resp.status == 200
            assert (await resp.json()) == {
                "latency": 0.2, "bandwidth": 0.0, "staging_delay": 0.05,
                "staging_per_record": 0.0, "staging_per_mb": 0.0, "staging_slots": 2,
                "tape_delay": 5.0}
        _, took = await timed(segment_paths(emu.base_url, session))
        assert 0.2 <= took < SLACK
        for bad in ({"latency": -1}, {"data_dir": "/"}, {"staging_slots": 1.5}):
            async with session.post(control, json=bad) as resp:
                assert resp.status == 400, bad
        assert emu.configure(latency=0)["latency"] == 0
        async with session.get(control) as resp:
            assert (await resp.json())["staging_slots"] == 2


# ---- staging time --------------------------------------------------------------------------
def expected_wait(reply: dict[str, Any], base: float, per_record: float, per_mb: float) -> int:
    return math.ceil(base + per_record * reply["rcount"] + per_mb * reply["size"])


@pytest.mark.parametrize(("per_record", "per_mb"), [(10.0, 0.0), (0.0, 3.0)])
async def test_staging_time_grows_with_records_and_megabytes(
        tmp_path: Path, per_record: float, per_mb: float) -> None:
    options = {"staging_delay": 4.0, "staging_per_record": per_record, "staging_per_mb": per_mb}
    async with session_on(tmp_path, **options) as (emu, session, _):
        small = await export(session, emu, m45(3))
        large = await export(session, emu, m45(30), OTHER)
        assert small["status"] == large["status"] == 2
        assert small["rcount"] < large["rcount"] and small["size"] < large["size"]
        for reply in (small, large):
            assert reply["wait"] == expected_wait(reply, 4.0, per_record, per_mb)
        assert small["wait"] < large["wait"]
        emu.advance_clock(small["wait"])
        await poll_done(session, emu, small["requestid"])
        assert await status(session, emu, large["requestid"]) == 1  # picked up, still working
        emu.advance_clock(large["wait"] - small["wait"])
        await poll_done(session, emu, large["requestid"])


async def test_per_record_cost_takes_real_time(tmp_path: Path) -> None:
    options = {"staging_delay": 0.0, "staging_per_record": 0.1}
    async with session_on(tmp_path, **options) as (emu, session, _):
        began = time.monotonic()
        reply = await export(session, emu, m45(3))  # 4 records: 0.4 s
        assert reply["rcount"] == 4 and reply["wait"] == 1
        done = await poll_done(session, emu, reply["requestid"])
        assert 0.4 <= done - began < SLACK


# ---- the site-wide queue -------------------------------------------------------------------
async def test_one_slot_queues_the_second_export(tmp_path: Path) -> None:
    async with session_on(tmp_path, staging_delay=0.25, staging_slots=1) as (emu, session, _):
        began = time.monotonic()
        first = await export(session, emu, m45(3))
        second = await export(session, emu, m45(6), OTHER)
        assert first["status"] == second["status"] == 2
        first_done = await poll_done(session, emu, first["requestid"])
        second_done = await poll_done(session, emu, second["requestid"])
        assert 0.25 <= first_done - began < SLACK
        assert second_done >= first_done and 0.5 <= second_done - began < SLACK


async def test_queue_statuses_and_wait_hints_on_the_simulated_clock(tmp_path: Path) -> None:
    async with session_on(tmp_path, staging_delay=10.0, staging_slots=1) as (emu, session, _):
        first = await export(session, emu, m45(3))
        second = await export(session, emu, m45(6), OTHER)
        assert (first["wait"], second["wait"]) == (10, 20)  # the queue is in the estimate
        emu.advance_clock(6)
        assert await status(session, emu, first["requestid"]) == 1  # processing
        assert await status(session, emu, second["requestid"]) == 2  # queued
        reply = await fetch(session, emu.base_url, op="exp_status",
                            requestid=second["requestid"])
        assert reply["wait"] in (13, 14)  # 20 s from the request, 6 s of which have passed
        emu.advance_clock(4)
        await poll_done(session, emu, first["requestid"])
        assert await status(session, emu, second["requestid"]) == 2  # its pickup: 5 s
        emu.advance_clock(6)
        assert await status(session, emu, second["requestid"]) == 1
        emu.advance_clock(5)
        await poll_done(session, emu, second["requestid"])


async def test_exports_beyond_the_slots_wait_for_the_earliest_end(tmp_path: Path) -> None:
    options = {"staging_delay": 10.0, "staging_slots": 2, "staging_per_record": 1.0,
               "emails": [f"user{i}@example.org" for i in range(3)]}
    async with session_on(tmp_path, **options) as (emu, session, _):
        replies = [await export(session, emu, m45(minutes), email)
                   for minutes, email in zip((3, 6, 4), options["emails"], strict=True)]
        assert [r["rcount"] for r in replies] == [4, 8, 5]
        assert [r["wait"] for r in replies] == [14, 18, 29]  # the third starts when the first ends


# ---- the quick path ------------------------------------------------------------------------
async def test_url_quick_as_is_stays_instant_with_jsoc_staging(tmp_path: Path) -> None:
    async with session_on(tmp_path, **JSOC_STAGING) as (emu, session, _):
        quick, took = await timed(export(session, emu, m45(3), method="url_quick",
                                         protocol="as-is"))
        assert quick["status"] == 0 and quick["requestid"] == "" and len(quick["data"]) == 4
        assert took < SLACK
        staged = await export(session, emu, m45(3), OTHER)
        assert staged["status"] == 2
        assert staged["wait"] == expected_wait(staged, 20.0, 0.5, 0.1) >= 20
        emu.configure(latency=LATENCY)
        quick, took = await timed(export(session, emu, m45(6), method="url_quick",
                                         protocol="as-is"))
        assert quick["status"] == 0 and LATENCY <= took < SLACK
