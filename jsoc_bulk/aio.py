"""The asyncio flavour: :class:`AsyncClient` and :class:`AsyncJob`, the same methods as the
synchronous ones, awaitable. Requests go through the same transport in a worker thread (they
are small JSON calls), so both flavours behave alike.

    >>> async with AsyncClient("http://127.0.0.1:8470/") as client:
    ...     job = await client.submit(search_result)
    ...     files = await job.wait(progress=False)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from jsoc_bulk.client import DEFAULT_URL, Client, Job
from jsoc_bulk.results import TERMINAL_STATES, FileEntry, Results, results_from


class AsyncClient:
    """A jsoc-bulk daemon's REST API, for asyncio code (see :class:`jsoc_bulk.Client`)."""

    def __init__(self, url: str = DEFAULT_URL, token: str | None = None,
                 timeout: float = 30.0) -> None:
        self.sync = Client(url, token=token, timeout=timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def submit(self, what: Any, *, idempotency_key: str | None = None,
                     **fields: Any) -> AsyncJob:
        """Submit a spec dict, a DRMS record-set string or a sunpy search result."""
        job = await asyncio.to_thread(self.sync.submit, what, idempotency_key=idempotency_key,
                                      **fields)
        return AsyncJob(job)

    async def job(self, job_id: str) -> AsyncJob:
        return AsyncJob(await asyncio.to_thread(self.sync.job, job_id))

    async def jobs(self, state: str | None = None, limit: int = 50) -> list[AsyncJob]:
        return [AsyncJob(j) for j in await asyncio.to_thread(self.sync.jobs, state, limit)]

    async def health(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.health)


class AsyncJob:
    """One job, for asyncio code (see :class:`jsoc_bulk.Job`)."""

    def __init__(self, job: Job) -> None:
        self.sync = job
        self.id = job.id

    def __repr__(self) -> str:
        return f"<AsyncJob {self.id} {self.sync.info.get('state', '?')}>"

    @property
    def info(self) -> dict[str, Any]:
        return self.sync.info

    async def status(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.status)

    async def files(self, state: str | None = None) -> AsyncIterator[FileEntry]:
        """Every file of the job (or those in ``state``), a page at a time."""
        pages = self.sync.files(state)
        while True:
            batch = await asyncio.to_thread(_take, pages, 500)
            for entry in batch:
                yield entry
            if len(batch) < 500:
                return

    async def wait(self, timeout: float | None = None, progress: bool = True,
                   interval: float = 1.0) -> Results:
        """Wait until the job ends; absolute paths of its files, failures in ``.errors``.
        ``progress`` prints a status line whenever it changes. TimeoutError after
        ``timeout`` seconds (the job goes on)."""
        from service.cli_progress import status_line

        deadline = None if timeout is None else time.monotonic() + timeout
        last = ""
        while True:
            job = await self.status()
            line = status_line(job)
            if progress and line != last:
                print(line, flush=True)
                last = line
            if job.get("state") in TERMINAL_STATES:
                break
            if deadline is not None and time.monotonic() + interval > deadline:
                raise TimeoutError(f"job {self.id} did not end in time; it goes on")
            await asyncio.sleep(interval)
        return results_from([e async for e in self.files()], job)

    async def pause(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.pause)

    async def resume(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.resume)

    async def cancel(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.cancel)

    async def retry(self, files: list[int] | None = None) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.retry, files)


def _take(pages: Any, n: int) -> list[FileEntry]:
    out: list[FileEntry] = []
    for entry in pages:
        out.append(entry)
        if len(out) == n:
            break
    return out
