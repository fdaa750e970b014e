"""Admission control: the API does its database work a few requests at a time.

The API and the workers share one event loop (``jsoc-bulk serve``). Fifty clients polling
``GET /jobs/{id}`` in tight loops would otherwise keep fifty handlers runnable at once and take
most of the loop's turns from the download lanes. Requests beyond ``API_CONCURRENCY`` wait
(cheaply, off the ready queue) for their turn; the API has its own connection pool too
(``Repo.sibling``), so neither side waits for the other's connections; concurrent status
reads of one job share one answer (``Coalescer``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

API_CONCURRENCY = 4  # requests doing database work at once
API_POOL_SIZE = API_CONCURRENCY + 1  # the API's own connections
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")


def make_admission_middleware(limit: int = API_CONCURRENCY) -> Callable[..., Awaitable[
        web.StreamResponse]]:
    """A middleware letting at most ``limit`` requests run their handler at once."""
    gate = asyncio.Semaphore(limit)

    @web.middleware
    async def admission(request: web.Request, handler: Handler) -> web.StreamResponse:
        async with gate:
            return await handler(request)

    return admission


def api_pool() -> dict[str, int]:
    """Engine options of the API's own connection pool (``Repo.sibling``)."""
    return {"pool_size": API_POOL_SIZE, "max_overflow": 2}


class Coalescer:
    """Concurrent identical reads share one computation: while ``GET /jobs/{id}`` of a job
    is being answered, further requests for it wait for that answer instead of asking the
    database again (never a cached answer from before the request arrived... except the one
    in flight when it arrived)."""

    def __init__(self) -> None:
        self._inflight: dict[str, asyncio.Future[Any]] = {}

    async def run(self, key: str, compute: Callable[[], Awaitable[T]]) -> T:
        future = self._inflight.get(key)
        if future is None:
            future = asyncio.ensure_future(compute())
            self._inflight[key] = future
            future.add_done_callback(lambda f: self._forget(key, f))
        return await asyncio.shield(future)

    def _forget(self, key: str, future: asyncio.Future[Any]) -> None:
        if self._inflight.get(key) is future:
            del self._inflight[key]
        if not future.cancelled():
            future.exception()  # retrieved: the waiters re-raise it
