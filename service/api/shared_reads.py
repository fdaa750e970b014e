"""Status reads shared between clients: ``GET /jobs/{id}`` answered from a body at most a
fraction of a second old.

Fifty clients polling one job as fast as the daemon answers would otherwise make the daemon
query the database and serialize the job's detail for every call, on the event loop the
download lanes use. Here each job's detail is computed at most once per ``fresh_seconds``
(concurrent requests for it share that computation) and kept as its serialized JSON body, so
a repeated read costs only the HTTP exchange. The API's own changes to a job (cancel, pause,
resume, retry, delete) drop its body at once; the workers' progress shows within
``fresh_seconds``. The body holds nothing caller-specific (the auth middleware runs before,
and every caller with the token sees the same job), so one body serves every caller.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

FRESH_SECONDS = 0.5  # how old a served status body may be
MAX_BODIES = 1024  # jobs whose status body is kept at once


@dataclass
class _Body:
    data: bytes
    made_at: float  # time.monotonic() when its computation started


class SharedReads:
    """Serialized answers by key, recomputed at most once per ``fresh_seconds``."""

    def __init__(self, fresh_seconds: float = FRESH_SECONDS, max_bodies: int = MAX_BODIES,
                 ) -> None:
        self.fresh_seconds, self.max_bodies = fresh_seconds, max_bodies
        self._bodies: dict[str, _Body] = {}
        self._inflight: dict[str, asyncio.Future[bytes]] = {}

    async def get(self, key: str, compute: Callable[[], Awaitable[bytes]]) -> bytes:
        """The body for ``key``: a fresh kept one, the one being computed, or a new one."""
        body = self._bodies.get(key)
        if body is not None and time.monotonic() - body.made_at < self.fresh_seconds:
            return body.data
        future = self._inflight.get(key)
        if future is None:
            started = time.monotonic()
            future = asyncio.ensure_future(compute())
            self._inflight[key] = future
            future.add_done_callback(lambda f: self._settled(key, f, started))
        return await asyncio.shield(future)

    def forget(self, key: str) -> None:
        """Drop ``key``'s body (its job changed): the next read computes a new one, and a
        computation already running is neither kept nor shared with later reads."""
        self._bodies.pop(key, None)
        self._inflight.pop(key, None)

    def _settled(self, key: str, future: asyncio.Future[bytes], started: float) -> None:
        failed = future.cancelled() or future.exception() is not None  # waiters re-raise it
        if self._inflight.get(key) is not future:  # forgotten meanwhile: not kept
            return
        del self._inflight[key]
        if not failed:
            self._keep(key, _Body(future.result(), started))

    def _keep(self, key: str, body: _Body) -> None:
        self._bodies.pop(key, None)  # re-inserted last: dicts keep insertion order
        if len(self._bodies) >= self.max_bodies:
            now = time.monotonic()
            for old in [k for k, b in self._bodies.items()
                        if now - b.made_at >= self.fresh_seconds]:
                del self._bodies[old]
            while len(self._bodies) >= self.max_bodies:
                del self._bodies[next(iter(self._bodies))]
        self._bodies[key] = body
