"""/metrics, /api/v1/health and /api/v1/ready on a real served API: the token, the database
(reachable or not, schema current or behind), JSOC (up, or down since when) and the workers'
conditions (disk full)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from service import cli
from service.api import ops
from service.api.app import running_api
from service.api.ops import ops_app
from service.db.migrate import head_revision, upgrade_async
from service.db.repo import Repo
from service.jsoc.metadata import SeriesMeta
from service.ops import jsoc_state
from service.settings import Settings
from service.stages.diskspace import DiskWatch
from tests.e2e.procs import free_port
from tests.service.api_harness import served_api

TOKEN = "ops-test-token-5d1c"


async def _no_lookup(series: str) -> SeriesMeta:
    raise AssertionError("no series lookups in these tests")


@asynccontextmanager
async def api_on(db_url: str, tmp_path: Path, jsoc_url: str,
                 **settings: Any) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    """The API on ``db_url`` (whatever state that database is in) and an HTTP session."""
    config = Settings(data_dir=tmp_path / "data", database_url=db_url, jsoc_url=jsoc_url,
                      **settings)
    repo = Repo.from_url(db_url)
    try:
        async with running_api(config, repo, port=0, series_lookup=_no_lookup) as base, \
                aiohttp.ClientSession() as http:
            yield base, http
    finally:
        await repo.close()


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as resp:
        body = await resp.json(content_type=None) if "json" in resp.content_type \
            else await resp.text()
        return resp.status, body


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}/"


async def test_metrics_need_the_token_unless_public(db_url: str, tmp_path: Path) -> None:
    async with served_api(db_url, tmp_path, token=TOKEN) as api:
        status, _ = await get(api.http, api.base_url + "metrics")
        assert status == 401
        async with api.http.get(api.base_url + "metrics",
                                headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
            assert resp.status == 200 and resp.content_type == "text/plain"
            families = {f.name: f for f in text_string_to_metric_families(await resp.text())}
        assert families["jsoc_bulk_database_up"].samples[0].value == 1
        assert "jsoc_bulk_queue_depth" in families and "jsoc_bulk_jobs" in families
        assert "process_cpu_seconds" in families  # prometheus-client's process figures
    async with served_api(db_url, tmp_path / "public", token=TOKEN, metrics_public=True) as api:
        status, text = await get(api.http, api.base_url + "metrics")
        assert status == 200 and "jsoc_bulk_pending_exports_limit 1.0" in text
        status, _ = await get(api.http, api.base_url + "api/v1/jobs")
        assert status == 401  # only /metrics became public


async def test_ready_when_all_is_well(db_url: str, tmp_path: Path) -> None:
    async with served_api(db_url, tmp_path, token=TOKEN) as api:
        status, ready = await get(api.http, api.base_url + "api/v1/ready")
    assert status == 200, ready
    assert ready["status"] == "ready" and ready["database"] == "ok"
    assert ready["migrations"] == "current" and ready["schema_revision"] == head_revision()
    assert ready["jsoc"]["state"] == "up" and ready["jsoc"]["last_ok_at"]  # probed: it answered


async def test_ready_says_the_schema_is_behind(blank_db_url: str, tmp_path: Path) -> None:
    await upgrade_async(blank_db_url, "0002")
    async with api_on(blank_db_url, tmp_path, closed_port_url()) as (base, http):
        status, ready = await get(http, base + "api/v1/ready")
        assert status == 503, ready
        assert ready["status"] == "not_ready" and ready["database"] == "ok"
        assert ready["migrations"] == "behind" and ready["schema_revision"] == "0002"
        assert ready["expected_revision"] == head_revision()


@pytest.mark.parametrize("unreachable", [
    "sqlite+aiosqlite:///{tmp}",  # a directory: cannot be opened as a database
    "postgresql+asyncpg://postgres@127.0.0.1:{port}/nowhere",
])
async def test_database_unreachable(unreachable: str, tmp_path: Path) -> None:
    url = unreachable.format(tmp=tmp_path, port=free_port())
    async with api_on(url, tmp_path, closed_port_url()) as (base, http):
        status, ready = await get(http, base + "api/v1/ready")
        assert status == 503 and ready["database"] == "unavailable", ready
        assert ready["migrations"] == "unknown" and ready["status"] == "not_ready"
        status, health = await get(http, base + "api/v1/health")
        assert status == 200  # liveness: the process answers
        assert health["status"] == "degraded" and health["database"] == "unavailable"
        status, text = await get(http, base + "metrics")
        assert status == 200 and "jsoc_bulk_database_up 0.0" in text


async def test_jsoc_down_since_when(db_url: str, tmp_path: Path) -> None:
    jsoc = closed_port_url()  # nothing listens: the probe cannot connect
    async with api_on(db_url, tmp_path, jsoc, token=TOKEN) as (base, http):
        status, health = await get(http, base + "api/v1/health")
        assert status == 200 and health["status"] == "ok"  # not asked yet: unknown
        assert health["jsoc"]["state"] == "unknown"
        status, ready = await get(http, base + "api/v1/ready")  # no token needed
        assert status == 200, ready  # jobs are still accepted; they wait for JSOC
        assert ready["status"] == "degraded" and ready["jsoc"]["state"] == "down"
        assert ready["jsoc"]["since"] and "connection error" in ready["jsoc"]["last_error"]
        status, health = await get(http, base + "api/v1/health")
        assert health["status"] == "degraded" and health["jsoc"] == ready["jsoc"]
    assert jsoc_state.reachability(jsoc).state == "down"


def test_jsoc_state_from_real_calls() -> None:
    url = closed_port_url()
    for _ in range(jsoc_state.DOWN_AFTER - 1):
        jsoc_state.record_unreachable(url, "timeout")
    r = jsoc_state.reachability(url)
    assert r.state == "unknown" and jsoc_state.needs_probe(url, 3600)  # failing, not yet down
    jsoc_state.record_unreachable(url, "timeout")
    assert r.state == "down" and r.since is not None and not jsoc_state.needs_probe(url, 3600)
    since = r.since
    jsoc_state.record_unreachable(url, "again")
    assert r.since == since  # down since the first failure
    jsoc_state.record_ok(url)
    assert r.state == "up" and r.failures == 0 and r.last_error == "again"


async def test_a_workers_only_process_serves_its_own_metrics(db_url: str,
                                                             tmp_path: Path) -> None:
    """The listener of metrics_port: this process's figures, health and ready; the job-level
    figures are left to the API (a sum over all targets counts them once)."""
    config = Settings(data_dir=tmp_path / "data", database_url=db_url, token=TOKEN,
                      jsoc_url=closed_port_url(), metrics_port=0)
    repo = Repo.from_url(db_url)
    runner = web.AppRunner(ops_app(config, repo))
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}/"
        async with aiohttp.ClientSession() as http:
            assert (await get(http, base + "metrics"))[0] == 401
            async with http.get(base + "metrics",
                                headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
                names = {f.name for f in text_string_to_metric_families(await resp.text())}
            assert "jsoc_bulk_db_transaction_seconds" in names
            assert "jsoc_bulk_jobs" not in names and "jsoc_bulk_database_up" not in names
            status, health = await get(http, base + "api/v1/health")
            assert status == 200 and health["database"] == "ok"
            async with http.get(base + "api/v1/jobs",
                                headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
                assert resp.status == 404  # no API here
    finally:
        await runner.cleanup()
        await repo.close()


async def test_cli_health_prints_the_readiness(db_url: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    async with served_api(db_url, tmp_path, token=TOKEN) as api:
        code = await asyncio.to_thread(cli.main, ["health", "--api-url", api.base_url])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.startswith("ready ") and "schema      current" in out
    assert re.search(r"jsoc +up \(last answer \d{4}-", out), out


async def test_a_hung_jsoc_does_not_hang_readiness(db_url: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """JSOC accepts the connection and never answers: ready answers at once with what it
    knows, the probe goes on, and a later check reports JSOC down."""
    monkeypatch.setattr(ops, "PROBE_WAIT_SECONDS", 0.1)
    monkeypatch.setattr(ops, "PROBE_TIMEOUT_SECONDS", 0.5)
    stalled: list[asyncio.StreamWriter] = []

    async def never_answer(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stalled.append(writer)

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    jsoc = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    try:
        async with api_on(db_url, tmp_path, jsoc) as (base, http):
            status, ready = await get(http, base + "api/v1/ready")
            assert status == 200 and ready["jsoc"]["state"] == "unknown", ready
            for _ in range(100):
                await asyncio.sleep(0.1)
                status, ready = await get(http, base + "api/v1/ready")
                if ready["jsoc"]["state"] == "down":
                    break
            assert ready["status"] == "degraded" and "timeout" in ready["jsoc"]["last_error"]
    finally:
        for writer in stalled:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_workers_disk_full_degrades_health_ready_and_the_job(db_url: str,
                                                                     tmp_path: Path) -> None:
    """A live worker's disk-full condition (its heartbeat row, as DiskWatch reports it):
    health and ready say degraded (200) and name the worker, an active job lists it; a stale
    worker's condition does not count, nor does it show on a finished job."""
    root = tmp_path / "files"
    root.mkdir()
    watch = DiskWatch(root)
    assert watch.report("[Errno 28] No space left on device")
    summary = watch.summary()
    assert summary is not None
    async with served_api(db_url, tmp_path) as api:
        ok = (await api.call("GET", "health")).body
        assert ok["status"] == "ok" and ok["conditions"] == [], ok
        await api.repo.heartbeat("w-full", hostname="h", pid=1,
                                 holding={"downloading": [], "disk_full": summary})
        await api.repo.heartbeat("w-gone", hostname="h", pid=2, now=datetime.now(UTC) -
                                 timedelta(hours=1), holding={"disk_full": summary})
        expected = [{"worker": "w-full", "condition": "disk_full",
                     "since": summary["since"], "path": str(root),
                     "error": "[Errno 28] No space left on device"}]
        for check in ("health", "ready"):
            reply = await api.call("GET", check)
            assert reply.status == 200 and reply.body["status"] == "degraded", reply.body
            assert reply.body["conditions"] == expected and reply.body["database"] == "ok"
        job_id = (await api.submit()).body["id"]
        assert (await api.call("GET", f"jobs/{job_id}")).body["conditions"] == expected
        await api.call("POST", f"jobs/{job_id}/cancel")
        assert (await api.call("GET", f"jobs/{job_id}")).body["conditions"] == []
