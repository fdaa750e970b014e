"""A hostile JSOC in front of the real emulator (a proxy that garbles chosen replies), on
SQLite and Postgres: malformed replies are retried and shown on the job, never read as
success; a bad file name fails only its file; failure text with NUL is stored; cancelling a
job while it is planned logs no traceback."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from service.db import UNFENCED
from service.db.repo import Repo
from service.jsoc.client import ExportReply
from service.jsoc.status import JsocMalformedReply
from service.stages.context import open_context
from service.stages.plan import _handle
from tests.chaos.hostile import HostileJsoc
from tests.service.jobs_harness import (
    EMAIL,
    check_files_match_manifest,
    finish_with_worker,
    job_spec,
    make_settings,
)
from tests.service.rows import job_with_chunks, ready_export

pytestmark = pytest.mark.emulator(emails=[EMAIL], staging_delay=0.05, file_size=4000)


async def events(repo: Repo, job_id: str) -> list[tuple[str, str]]:
    summary = await repo.job_summary(job_id, events=50)
    return [(e.kind, e.message) for e in summary.recent_events]


async def test_malformed_replies_are_retried_and_shown_never_success(
        emu: Any, repo: Repo, db_url: str, tmp_path: Path) -> None:
    garbled = {"exp_request": 1, "exp_status": 3}

    def tamper(op: str, reply: dict[str, Any]) -> dict[str, Any] | None:
        if op == "exp_request" and garbled[op]:
            garbled[op] -= 1
            return {"status": "two", "requestid": reply.get("requestid")}
        if op == "exp_status" and reply.get("status") in (0, "0") and garbled[op]:
            garbled[op] -= 1
            return {"status": 0, "data": "notalist", "count": "abc"}
        return None

    async with HostileJsoc(emu.base_url, tamper) as jsoc:
        settings = make_settings(tmp_path, jsoc, db_url, max_chunk_records=4)
        job, _ = await repo.create_job(job_spec(4, method="url"), notify_email=EMAIL)
        await finish_with_worker(settings, repo, job.id, timeout=60)
    assert garbled == {"exp_request": 0, "exp_status": 0}  # every garbled reply was sent
    final = await repo.get_job(job.id)
    files = await repo.list_files(job.id)
    assert final is not None and final.state == "succeeded"
    assert len(files) == 4 and {f.state for f in files} == {"done"}
    check_files_match_manifest(emu, settings.download_dir, files)
    shown = [message for kind, message in await events(repo, job.id)
             if kind == "jsoc_malformed_reply"]
    assert any("malformed exp_request reply" in m and "status" in m for m in shown), shown
    assert sum("malformed exp_status reply" in m and "data" in m for m in shown) == 3, shown


BAD_NAMES = ["..", "bad\u0000name.fits"]


async def test_a_bad_file_name_fails_only_its_file(emu: Any, repo: Repo, db_url: str,
                                                   tmp_path: Path) -> None:
    def tamper(op: str, reply: dict[str, Any]) -> dict[str, Any] | None:
        if op != "exp_status" or reply.get("status") not in (0, "0"):
            return None
        rows = reply["data"]
        for row, bad in zip(rows, BAD_NAMES, strict=False):
            row["filename"] = bad
        return reply

    async with HostileJsoc(emu.base_url, tamper) as jsoc:
        settings = make_settings(tmp_path, jsoc, db_url, max_chunk_records=4)
        job, _ = await repo.create_job(job_spec(4, method="url"), notify_email=EMAIL)
        await finish_with_worker(settings, repo, job.id, timeout=60)
    final = await repo.get_job(job.id)
    files = await repo.list_files(job.id)
    assert final is not None and final.state == "completed_with_errors", final.error
    failed = [f for f in files if f.state == "failed"]
    done = [f for f in files if f.state == "done"]
    assert len(failed) == 2 and len(done) == 2, [(f.state, f.error) for f in files]
    assert all(f.error and "JSOC listed" in f.error for f in failed), [f.error for f in failed]
    assert any("NUL" in f.error for f in failed if f.error)
    assert any("'..'" in f.error for f in failed if f.error)
    check_files_match_manifest(emu, settings.download_dir, done)
    assert [k for k, _ in await events(repo, job.id)].count("file_failed") == 2


@pytest.mark.unit
def test_malformed_export_replies_raise_and_are_transient() -> None:
    for payload in ({"status": 0, "data": "notalist", "count": "abc"},
                    {"status": 0},  # done, but no file list
                    {"status": "abc"}, {"wait": 1},
                    {"status": 2, "requestid": "JSOC_1\u0000"}):
        with pytest.raises(JsocMalformedReply) as info:
            ExportReply.from_json(payload, "exp_status")
        assert info.value.retryable and "malformed exp_status reply" in info.value.message
    ok = ExportReply.from_json({"status": "0", "count": "1", "size": "2.5", "wait": "3",
                                "data": [{"record": "r", "filename": "f.fits"}]})
    assert (ok.status, ok.count, ok.size_mb, ok.wait) == (0, 1, 2, 3.0)


async def test_failure_text_with_nul_or_surrogates_is_stored(repo: Repo) -> None:
    """Every place an error is recorded stores such text cleaned (Postgres refuses NUL): the
    failure is recorded instead of failing itself and being retried in a loop."""
    bad = "JSOC said: 'hmi.M_45s[x]\u0000' and \ud800"
    job_id = await job_with_chunks(repo, 2)
    claim = await repo.claim_chunk_to_export("w0", max_pending_per_email=100)
    assert claim is not None
    await repo.fail_export(claim.export_id, error=bad, jsoc_status=4,
                           lease_token=claim.lease_token)
    await ready_export(repo, job_id, ["a", "b"])
    await repo.add_event(job_id, "note", bad)
    files = await repo.list_files(job_id)
    assert await repo.fail_file(files[0].id, bad, lease_token=UNFENCED) is not None
    failed = await repo.fail_job(job_id, bad)
    cleaned = "JSOC said: 'hmi.M_45s[x]\\x00' and \\ud800"
    assert failed.state == "failed" and failed.error == cleaned
    stored = {f.id: f.error for f in await repo.list_files(job_id)}
    assert stored[files[0].id] == cleaned
    exports = {e.id: e.error for e in await repo.list_exports(job_id)}
    assert exports[claim.export_id] == cleaned
    chunks = {c.id: c.error for c in await repo.list_chunks(job_id)}
    assert chunks[claim.chunk_id] == cleaned
    messages = [m for _k, m in await events(repo, job_id) if "JSOC said" in m]
    assert len(messages) >= 4 and all(m.endswith(cleaned) for m in messages), messages


async def test_cancel_while_planning_logs_no_traceback(emu: Any, repo: Repo, db_url: str,
                                                       tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(tmp_path, emu.base_url, db_url)
    job, _ = await repo.create_job(job_spec(8), notify_email=EMAIL)
    async with open_context(settings, repo, asyncio.Event(), "w") as ctx:
        claim = await repo.claim_job_to_plan("w", lease_seconds=30, max_ahead=2)
        assert claim is not None
        describe = ctx.jsoc.series_struct

        async def cancelled_meanwhile(series: str) -> Any:  # the user cancels mid-planning
            await repo.cancel_job(job.id)
            return await describe(series)

        ctx.jsoc.series_struct = cancelled_meanwhile  # type: ignore[method-assign]
        with caplog.at_level(logging.INFO):
            await _handle(ctx, claim)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert any("planning job" in r.getMessage() and "stopped" in r.getMessage()
               for r in caplog.records)
    assert job.id not in ctx.held_plans and job.id not in ctx.holding["planning"]
    assert (await repo.get_job(job.id)).state == "cancelled"  # type: ignore[union-attr]


async def test_a_stored_spec_with_nul_fails_its_job_clearly(emu: Any, repo: Repo, db_url: str,
                                                            tmp_path: Path) -> None:
    """A job stored before input was checked, with a NUL in a where value: the worker fails
    it once with a message naming the field, instead of retrying planning forever."""
    settings = make_settings(tmp_path, emu.base_url, db_url)
    spec = job_spec(4, where=[{"keyword": "QUALITY", "op": "=", "value": "0\u0000"}])
    job, _ = await repo.create_job(spec, notify_email=EMAIL)
    await finish_with_worker(settings, repo, job.id, timeout=30)
    final = await repo.get_job(job.id)
    assert final is not None and final.state == "failed"
    assert final.error is not None and "where.0.value: contains a NUL" in final.error
