"""``jsoc-bulk``: argument parsing and settings in-process; client commands as real subprocesses
against an API served by the test."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shutil
import typing
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import pytest
from rich.console import Console

from service import cli
from service.cli_options import SPEC_FLAGS, spec_from_args
from service.cli_progress import follow_job, status_line
from service.jobspec import JobSpec
from service.settings import Settings
from tests.e2e.procs import free_port
from tests.service.api_harness import SPEC, Api, served_api
from tests.service.cli_harness import JSOC_BULK, assert_one_line_error, jsoc_bulk


def parse(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(list(argv))


# --- in-process: parsing and settings ----------------------------------------------------------


@pytest.mark.unit
def test_settings_precedence_flag_over_env_over_default(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("JSOC_BULK_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    default = cli.settings_from_args(parse("jobs"))
    assert default.port == Settings.model_fields["port"].default
    assert default.jsoc_url == Settings.model_fields["jsoc_url"].default
    monkeypatch.setenv("JSOC_BULK_PORT", "9001")
    monkeypatch.setenv("JSOC_BULK_JSOC_URL", "http://127.0.0.1:1/")
    from_env = cli.settings_from_args(parse("jobs"))
    assert (from_env.port, from_env.jsoc_url) == (9001, "http://127.0.0.1:1/")
    flagged = cli.settings_from_args(parse("--port", "9002", "jobs", "--jsoc-url",
                                           "http://127.0.0.1:2/"))
    assert (flagged.port, flagged.jsoc_url) == (9002, "http://127.0.0.1:2/")
    assert cli.api_url(parse("jobs"), flagged) == "http://127.0.0.1:9002/"
    monkeypatch.setenv("JSOC_BULK_API_URL", "http://127.0.0.1:7/")
    assert cli.api_url(parse("jobs"), flagged) == "http://127.0.0.1:7/"
    assert cli.api_url(parse("jobs", "--api-url", "http://127.0.0.1:8/"),
                       flagged) == "http://127.0.0.1:8/"
    with pytest.raises(cli.CliError, match="port"):
        cli.settings_from_args(parse("jobs", "--port", "70000"))


@pytest.mark.unit
def test_every_setting_and_spec_field_has_a_flag() -> None:
    assert set(SPEC_FLAGS) == set(JobSpec.model_fields)
    args = parse("serve", *[arg for name in Settings.model_fields
                            for arg in (f"--{name.replace('_', '-')}", _sample(name))
                            if arg is not None])
    assert set(Settings.model_fields) <= set(vars(args))


def _sample(name: str) -> str | None:
    """A value for the setting's flag (None: a switch takes none)."""
    annotation = Settings.model_fields[name].annotation
    if annotation is bool:
        return None
    if "dict" in str(annotation):
        return '{"example.org": 2}'
    choices = typing.get_args(annotation) if typing.get_origin(annotation) is Literal else ()
    return str(choices[-1]) if choices else "1"


@pytest.mark.unit
def test_spec_from_file_and_flags(tmp_path: Path) -> None:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({**SPEC, "prime_keys": {"CAMERA": 1}, "priority": 1}))
    args = parse("submit", str(path), "--priority", "7", "--segments", "magnetogram,field",
                 "--wavelengths", "171,193.5", "--prime-keys", "HARPNUM=377,378",
                 "--where", "QUALITY = 0", "--where", "EXPTIME > 1", "--follow")
    body = spec_from_args(args)
    assert body["priority"] == 7 and body["series"] == SPEC["series"]
    assert body["segments"] == ["magnetogram", "field"]
    assert body["wavelengths"] == [171, 193.5]
    assert body["prime_keys"] == {"CAMERA": 1, "HARPNUM": [377, 378]}
    assert body["where"] == ["QUALITY = 0", "EXPTIME > 1"] and body["follow"] is True
    with pytest.raises(ValueError, match="NAME=VALUE"):
        spec_from_args(parse("submit", "--prime-keys", "HARPNUM"))
    with pytest.raises(ValueError, match="no job spec"):
        spec_from_args(parse("submit"))
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        spec_from_args(parse("submit", str(path)))


@pytest.mark.unit
def test_progress_plain_lines_and_terminal_bars() -> None:
    states = iter(["queued", "running", "running", "succeeded"])
    jobs = [{"id": "j1", "state": s, "files": {"done": i, "pending": 3 - i},
             "chunks": {"done": i // 3}, "bytes_done": 100 * i, "bytes_total": 300}
            for i, s in enumerate(states)]
    out = io.StringIO()
    plain = Console(file=out, force_terminal=False, width=200)
    last = follow_job(iter(jobs).__next__, console=plain, sleep=lambda _s: None)
    assert last["state"] == "succeeded"
    assert out.getvalue().splitlines() == [status_line(j) for j in jobs]
    tty_out = io.StringIO()
    tty = Console(file=tty_out, force_terminal=True, width=120)
    follow_job(iter(jobs).__next__, console=tty, sleep=lambda _s: None)
    rendered = tty_out.getvalue()
    assert "\x1b[" in rendered and "3/3" in rendered and "job j1: succeeded" in rendered


# --- real subprocesses against a served API -------------------------------------------------


@pytest.fixture
async def served(sqlite_template: Path, tmp_path: Path) -> AsyncIterator[Api]:
    db = tmp_path / "cli.db"
    shutil.copyfile(sqlite_template, db)
    async with served_api(f"sqlite+aiosqlite:///{db}", tmp_path, token="tok-123") as api:
        yield api


async def test_submit_jobs_status_cancel_watch_as_subprocesses(served: Api,
                                                               tmp_path: Path) -> None:
    flags = ["--series", SPEC["series"], "--start", SPEC["start"], "--end", SPEC["end"]]
    submitted = await jsoc_bulk(served, "submit", *flags, "--segments", "magnetogram",
                                "--json")
    assert submitted.code == 0, submitted.err
    job_id = json.loads(submitted.out)["id"]
    assert (await served.repo.get_job(job_id)).spec["segments"] == ["magnetogram"]  # type: ignore[union-attr]

    spec_file = tmp_path / "job.json"
    spec_file.write_text(json.dumps(SPEC))
    second = await jsoc_bulk(served, "submit", str(spec_file), "--priority", "4")
    assert second.code == 0 and second.out.startswith("submitted job ")
    second_id = second.out.split()[2]
    assert (await served.repo.get_job(second_id)).priority == 4  # type: ignore[union-attr]

    listed = await jsoc_bulk(served, "jobs")
    assert listed.code == 0 and {job_id, second_id} <= set(listed.out.split())
    status = await jsoc_bulk(served, "status", job_id)
    assert status.code == 0 and f"job {job_id} queued" in status.out
    cancelled = await jsoc_bulk(served, "cancel", job_id)
    assert cancelled.code == 0 and cancelled.out.strip() == f"job {job_id} is cancelled"
    assert_one_line_error(await jsoc_bulk(served, "resume", job_id), "cannot resume", "cancelled")
    watched = await jsoc_bulk(served, "watch", job_id, "--interval", "0.1")
    assert watched.code == cli.EXIT_FAILED and f"job {job_id} cancelled" in watched.out
    assert_one_line_error(await jsoc_bulk(served, "status", "nope"), "no job with id 'nope'")


async def test_errors_are_one_line_with_nonzero_exit(served: Api) -> None:
    nobody = f"http://127.0.0.1:{free_port()}/"
    bad_segment, no_token, wrong_token, bad_state, unreachable = await asyncio.gather(
        jsoc_bulk(served, "submit", "--series", SPEC["series"], "--start", SPEC["start"],
                  "--end", SPEC["end"], "--segments", "bogus"),
        jsoc_bulk(served, "jobs", token=None),
        jsoc_bulk(served, "jobs", token="wrong"),
        jsoc_bulk(served, "jobs", "--state", "bogus"),
        jsoc_bulk(nobody, "status", "x"))
    assert_one_line_error(bad_segment, "Unexpected Segments", "magnetogram")
    assert_one_line_error(no_token, "requires a token")
    assert_one_line_error(wrong_token, "not valid")
    assert_one_line_error(bad_state, "bogus", "queued")
    assert_one_line_error(unreachable, "cannot reach", nobody)
    assert await served.repo.list_jobs() == []


async def test_db_upgrade_then_serve_api_only_until_sigterm(tmp_path: Path) -> None:
    from service.apiclient import ApiClient, ApiError
    from service.db.migrate import current_revision_async, head_revision

    db_url = f"sqlite+aiosqlite:///{tmp_path / 'served.db'}"
    upgraded = await jsoc_bulk("http://127.0.0.1:1/", "db", "upgrade", "--database-url", db_url)
    assert upgraded.code == 0, upgraded.err
    assert await current_revision_async(db_url) == head_revision()

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("JSOC_BULK_")}
    proc = await asyncio.create_subprocess_exec(
        JSOC_BULK, "serve", "--api-only", "--port", str(port), "--database-url", db_url,
        "--data-dir", str(tmp_path / "data"), "--email", "a@example.org",
        env={**env, "HOME": str(tmp_path)}, stderr=asyncio.subprocess.PIPE)
    client = ApiClient(f"http://127.0.0.1:{port}/", timeout=2)
    deadline = asyncio.get_running_loop().time() + 30
    health = None
    while health is None and proc.returncode is None:
        try:
            health = await asyncio.to_thread(client.health)
        except ApiError:
            assert asyncio.get_running_loop().time() < deadline, "API did not come up"
            await asyncio.sleep(0.05)  # poll interval, not a wait for an event
    if health is None:
        pytest.fail(f"serve exited early: {(await proc.communicate())[1].decode()}")
    assert health["status"] == "ok" and health["auth"] is False
    proc.terminate()
    _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0, err.decode()
    assert "Traceback" not in err.decode()
