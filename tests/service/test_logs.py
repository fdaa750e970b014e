"""Logging: JSON lines with their context, readable text, access lines only at DEBUG, and no
secret in any line (message or traceback)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from service.ops.logs import FIELDS, context_with, log_context, setup_logging
from service.settings import Settings

pytestmark = pytest.mark.unit

TOKEN = "log-test-token-9a8b7c"
PASSWORD = "db-pass-4e5f6a"
DB_URL = f"postgresql+asyncpg://jsoc:{PASSWORD}@db.example.org/jsoc"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    access = logging.getLogger("aiohttp.access").level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(access)


def configure(fmt: str, level: str = "INFO") -> io.StringIO:
    stream = io.StringIO()
    setup_logging(Settings(token=TOKEN, database_url=DB_URL, log_format=fmt, log_level=level),
                  stream)
    return stream


async def emit_lines() -> None:
    log = logging.getLogger("service.test")
    log.info("plain line")
    with log_context(job="j1", export=7, worker="w-1"):
        log.info("about an export")
        with log_context(file=42):
            log.warning("token %s and url %s leaked?", TOKEN, DB_URL)

        async def task() -> None:
            log.info("in a task")
        await asyncio.create_task(task(), context=context_with(file=43))
    try:
        raise RuntimeError(f"connect to {DB_URL} with Bearer {TOKEN}")
    except RuntimeError:
        log.exception("it failed")
    logging.getLogger("aiohttp.access").info("GET /api/v1/jobs 200")


async def test_json_lines_parse_with_their_context(restore_logging: None) -> None:
    stream = configure("json")
    await emit_lines()
    text = stream.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]  # every line one JSON object
    assert [e["message"] for e in lines][:4] == [
        "plain line", "about an export", "token *** and url "
        "postgresql+asyncpg://jsoc:***@db.example.org/jsoc leaked?", "in a task"]
    for entry in lines:
        assert set(entry) >= {"time", "level", "logger", "message", *FIELDS}
        assert entry["time"].endswith("Z") and entry["logger"] == "service.test"
    plain, export, leak, task, failed = lines
    assert all(plain[f] is None for f in FIELDS)
    assert (export["job"], export["export"], export["file"], export["worker"]) == (
        "j1", "7", None, "w-1")
    assert (leak["level"], leak["file"]) == ("WARNING", "42")
    assert (task["job"], task["file"]) == ("j1", "43")  # inherited, plus its own
    assert failed["level"] == "ERROR" and "RuntimeError" in failed["exception"]
    assert TOKEN not in text and PASSWORD not in text


async def test_text_lines_and_access_lines_at_debug(restore_logging: None) -> None:
    stream = configure("text")
    await emit_lines()
    text = stream.getvalue()
    assert " INFO service.test [job=j1 export=7 worker=w-1]: about an export" in text
    assert "GET /api/v1/jobs" not in text  # access lines are off at INFO
    assert TOKEN not in text and PASSWORD not in text and "Traceback" in text
    debug = configure("text", "DEBUG")
    await emit_lines()
    assert "aiohttp.access: GET /api/v1/jobs 200" in debug.getvalue()
