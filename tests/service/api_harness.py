"""A served API (real HTTP on 127.0.0.1) on a test database, validating against the emulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from jsocsim import run_emulator
from service.api.app import running_api
from service.api.problems import PROBLEM_CONTENT_TYPE
from service.db.repo import Repo
from service.settings import Settings

EMAIL = "a@example.org"
OTHER_EMAIL = "b@example.org"  # also registered at the emulator
PENDING_EMAIL = "waiting@example.org"  # registration pending (checkAddress status 3)
SPEC = {"series": "hmi.M_720s", "start": "2014.01.01_00:00:00_TAI",
        "end": "2014.01.01_01:00:00_TAI"}


@dataclass
class Reply:
    status: int
    headers: Any
    content_type: str
    body: Any


@dataclass
class Api:
    base_url: str
    http: aiohttp.ClientSession
    repo: Repo
    settings: Settings
    jsoc_url: str

    async def call(self, method: str, path: str, **kw: Any) -> Reply:
        """One request to ``/api/v1/<path>``; the body is parsed as JSON when it is JSON."""
        async with self.http.request(method, f"{self.base_url}api/v1/{path}", **kw) as resp:
            text = await resp.text()
            is_json = resp.content_type.endswith("json")
            body = await resp.json(content_type=None) if is_json and text else text
            return Reply(resp.status, resp.headers, resp.content_type, body)

    async def submit(self, spec: dict[str, Any] | None = None, **kw: Any) -> Reply:
        return await self.call("POST", "jobs", json=spec or SPEC, **kw)


@asynccontextmanager
async def served_api(db_url: str, tmp_path: Path, *, jsoc_url: str | None = None,
                     **settings: Any) -> AsyncIterator[Api]:
    """Emulator + repository + API on free ports; ``jsoc_url`` overrides the emulator's URL."""
    async with run_emulator(tmp_path / "emu", emails=[EMAIL, OTHER_EMAIL],
                            pending_emails=[PENDING_EMAIL]) as emu:
        config = Settings(**{"data_dir": tmp_path / "data", "database_url": db_url,
                             "email": EMAIL, "jsoc_url": jsoc_url or emu.base_url, **settings})
        repo = Repo.from_url(db_url)
        try:
            async with running_api(config, repo, port=0) as base_url, \
                    aiohttp.ClientSession() as http:
                yield Api(base_url, http, repo, config, emu.base_url)
        finally:
            await repo.close()


def assert_problem(reply: Reply, status: int, *needles: str) -> None:
    """An RFC 9457 problem document with the given status whose detail names each needle."""
    assert reply.status == status, reply.body
    assert reply.content_type == PROBLEM_CONTENT_TYPE
    doc = reply.body
    assert {"type", "title", "status", "detail", "errors"} <= set(doc)
    assert doc["status"] == status
    for needle in needles:
        assert needle in doc["detail"], (needle, doc["detail"])
