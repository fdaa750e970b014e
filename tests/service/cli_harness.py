"""The ``jsoc-bulk`` console script run as a real subprocess, and checks of what it prints."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from service import cli
from tests.service.api_harness import Api

JSOC_BULK = str(Path(sys.executable).parent / "jsoc-bulk")


@dataclass
class Run:
    """A finished ``jsoc-bulk`` process: exit code and its output."""

    code: int
    out: str
    err: str


async def jsoc_bulk(api: Api | str, *args: str, token: str | None = "tok-123") -> Run:
    """Run the console script against ``api`` (or a URL); settings only from flags and
    JSOC_BULK_TOKEN."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JSOC_BULK_")}
    if token:
        env["JSOC_BULK_TOKEN"] = token
    proc = await asyncio.create_subprocess_exec(
        JSOC_BULK, "--api-url", api if isinstance(api, str) else api.base_url, *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


def assert_one_line_error(run: Run, *needles: str) -> None:
    """The run failed with one ``jsoc-bulk: error:`` line naming each needle, no traceback."""
    assert run.code == cli.EXIT_ERROR, run
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jsoc-bulk: error: "), run.err
    assert "Traceback" not in run.err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
