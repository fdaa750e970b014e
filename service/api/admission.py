"""Admission control: the API takes a bounded share of the event loop it shares with the
download lanes.

In ``jsoc-bulk serve`` the API and the workers share one event loop, and one download
connection makes the download rate sensitive to every millisecond the loop spends elsewhere.
Fifty clients polling ``GET /jobs/{id}`` as fast as the daemon answers would take as much of
the loop as they are given. So:

- at most ``API_CONCURRENCY`` requests run their handler at once; the others wait (cheaply,
  off the ready queue) in arrival order;
- with a ``LoopBudget`` (when the workers share the loop), each request is charged the loop
  time its handler and sending its answer took (measured step by step, not counting its
  waits) plus ``REQUEST_OVERHEAD`` for reading the request, and requests wait while the API has
  used more than ``share`` of the loop's time (after a burst allowance);
- the API has its own connection pool (``Repo.sibling``), so neither side waits for the
  other's connections, and status reads of one job share one answer
  (``service.api.shared_reads``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Generator
from contextlib import suppress
from typing import Any

from aiohttp import web

API_CONCURRENCY = 4  # requests doing database work at once
API_POOL_SIZE = API_CONCURRENCY + 1  # the API's own connections
API_LOOP_SHARE = 0.1  # of the loop's time, when the workers share the loop
API_LOOP_BURST = 0.05  # seconds of loop time the API may use at once beyond its share
# seconds of the loop a request costs beyond what Timed sees (reading and parsing it, the
# loop's turns and system calls around it): the daemon's CPU time per answered status call
# was ~0.55 ms on a 2-vCPU machine (bench/status_load.py), of which Timed saw ~0.15 ms
REQUEST_OVERHEAD = 0.0004
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Clock = Callable[[], float]


class LoopBudget:
    """A token bucket of event-loop seconds: ``share`` of each second flows in, up to
    ``burst``; requests are charged what they used and wait while the bucket is in debt."""

    def __init__(self, share: float = API_LOOP_SHARE, burst: float = API_LOOP_BURST, *,
                 clock: Clock = time.monotonic) -> None:
        if not 0 < share <= 1 or burst <= 0:
            raise ValueError(f"share must be in (0, 1] and burst > 0, not {share}, {burst}")
        self.share, self.burst, self._clock = share, burst, clock
        self._level, self._at = burst, clock()

    @property
    def level(self) -> float:
        """Loop seconds available now (negative: in debt)."""
        now = self._clock()
        self._level = min(self.burst, self._level + (now - self._at) * self.share)
        self._at = now
        return self._level

    async def wait(self) -> None:
        """Return once the bucket is out of debt."""
        while (level := self.level) < 0:
            await asyncio.sleep(-level / self.share)

    def charge(self, seconds: float) -> None:
        self._level = self.level - seconds


class Timed:
    """Awaits ``awaitable`` and adds the time spent running its steps (not its waits) to
    ``seconds``: the loop time it took."""

    def __init__(self, awaitable: Awaitable[Any], clock: Clock = time.perf_counter) -> None:
        self._inner, self._clock, self.seconds = awaitable.__await__(), clock, 0.0

    def __await__(self) -> Generator[Any, Any, Any]:
        inner, step, value = self._inner, self._inner.send, None
        while True:
            started = self._clock()
            try:
                yielded = step(value)
            except StopIteration as done:
                return done.value
            finally:
                self.seconds += self._clock() - started
            try:
                value, step = (yield yielded), inner.send
            except GeneratorExit:
                inner.close()
                raise
            except BaseException as exc:  # handed on to the awaitable
                value, step = exc, inner.throw


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The handler's response, already sent (so that sending it is measured too; aiohttp
    does not send a prepared response again)."""
    response = await handler(request)
    with suppress(ConnectionResetError):  # the client left: aiohttp handles it as usual
        await response.prepare(request)
        await response.write_eof()
    return response


def make_admission_middleware(limit: int = API_CONCURRENCY, budget: LoopBudget | None = None,
                              ) -> Callable[..., Awaitable[web.StreamResponse]]:
    """A middleware letting at most ``limit`` requests run their handler at once and, with
    a ``budget``, only while the API is within its share of the loop."""
    gate = asyncio.Semaphore(limit)

    @web.middleware
    async def admission(request: web.Request, handler: Handler) -> web.StreamResponse:
        async with gate:
            if budget is None:
                return await handler(request)
            await budget.wait()
            timed = Timed(_answer(request, handler))
            try:
                return await timed  # type: ignore[no-any-return]
            finally:
                budget.charge(timed.seconds + REQUEST_OVERHEAD)

    return admission


def api_pool() -> dict[str, int]:
    """Engine options of the API's own connection pool (``Repo.sibling``)."""
    return {"pool_size": API_POOL_SIZE, "max_overflow": 2}
