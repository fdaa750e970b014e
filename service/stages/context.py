"""What every stage needs: settings, repository, JSOC client, the one HTTP session, breakers,
the worker id, the clock, and small helpers for pacing (poll delays, retry delays, sleeps that
end when the worker stops)."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from service.db.models import LOCAL_HOST
from service.db.repo import Repo
from service.db.repo_workers import HeldFiles
from service.download.limits import BreakerState, CircuitBreaker, HostBreakers, retry_delay
from service.jsoc.client import JsocClient, user_agent
from service.manifest import ManifestWriter
from service.ops import metrics
from service.ops.logs import context_with
from service.planning.cursor import JobEstimate
from service.settings import Settings
from service.stages.diskspace import DiskWatch
from service.stages.recorder import OutcomeRecorder

log = logging.getLogger(__name__)

BREAKER_THRESHOLD = 5  # consecutive failures that open a host's circuit breaker
BREAKER_COOLDOWN_MAX = 30.0  # seconds an open breaker waits before letting a probe through
MAX_IDLE_SECONDS = 5.0
EXTRA_CONNECTIONS = 4  # CGI calls on top of the download connections
PLAN_WAKE_SECONDS = 1.0  # files finishing wake the planner (more chunks) at most this often


STAGE_NAMES = ("plan", "submit", "poll", "download")


def download_connection_limit(s: Settings, host: str) -> int:
    """Connections allowed to a download host (``host[:port]`` as stored on files)."""
    if host == LOCAL_HOST:
        return s.global_download_limit
    if host.lower() in s.host_connection_limits:
        return s.host_connection_limits[host.lower()]
    name = urlsplit(f"//{host}").hostname or host
    jsoc = urlsplit(s.jsoc_url)
    if host.lower() == jsoc.netloc.lower():
        return s.max_connections_per_jsoc_host
    return s.connection_limit(name)


class Wakers:
    """One wake-up per stage loop: an event wakes only the stages it concerns (an export
    became ready: download and submit; chunks were planned: submit), never all of them."""

    def __init__(self) -> None:
        self._events = {name: asyncio.Event() for name in STAGE_NAMES}
        self._last: dict[str, float] = {}

    def poke(self, *stages: str) -> None:
        """Wake the named stages (all of them when none is named, e.g. on shutdown)."""
        for name in stages or STAGE_NAMES:
            self._events[name].set()

    def poke_at_most_every(self, stage: str, seconds: float) -> None:
        """Wake ``stage`` unless it was woken this way less than ``seconds`` ago (for events
        that come several times a second and only sometimes matter to it)."""
        now = time.monotonic()
        if now - self._last.get(stage, -seconds) >= seconds:
            self._last[stage] = now
            self._events[stage].set()

    async def wait(self, stage: str, timeout: float) -> None:
        """Wait until ``stage`` is poked or ``timeout`` passes; then re-arm."""
        event = self._events[stage]
        with suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        event.clear()


@dataclass
class StageContext:
    """Shared dependencies of the stage loops of one worker."""

    settings: Settings
    repo: Repo
    jsoc: JsocClient
    session: aiohttp.ClientSession
    worker_id: str
    stop: asyncio.Event
    breakers: HostBreakers
    recorder: OutcomeRecorder
    wakers: Wakers = field(default_factory=Wakers)
    lanes: dict[str, set[str]] = field(default_factory=dict)  # host -> names of running lanes
    renewed_at: float = 0.0  # monotonic start of the last successful lease renewal
    estimates: dict[str, JobEstimate] = field(default_factory=dict)
    held_plans: dict[str, Any] = field(default_factory=dict)  # job id -> plan.HeldPlan
    holding: dict[str, set[Any]] = field(default_factory=lambda: {
        "planning": set(), "submitting": set(), "polling": set(), "downloading": set()})
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    rng: random.Random = field(default_factory=random.Random)
    claims_in_flight: int = 0  # file claims whose rows are not in ``holding`` yet
    _disk: DiskWatch | None = None

    # -- time and pacing ---------------------------------------------------------------------

    def now(self) -> datetime:
        """The repository's clock (timezone-aware UTC)."""
        return self.repo.clock()

    def later(self, seconds: float) -> datetime:
        return self.now() + timedelta(seconds=seconds)

    @property
    def download_root(self) -> Path:
        assert self.settings.download_dir is not None
        return self.settings.download_dir

    @property
    def idle_seconds(self) -> float:
        """How long an idle stage loop waits before looking for work again (at first)."""
        return min(1.0, self.settings.poll_min)

    @property
    def max_idle_seconds(self) -> float:
        return max(self.idle_seconds, min(MAX_IDLE_SECONDS, self.settings.poll_min))

    def poll_delay(self, wait: float | None, polls: int) -> float:
        """Seconds until the next exp_status: JSOC's ``wait`` hint, or a growing backoff when
        the hint is missing or already passed, bounded by poll_min and poll_max."""
        s = self.settings
        backoff = s.poll_min * 1.5 ** min(max(polls, 0), 40)
        hint = wait if wait is not None and wait > 0 else backoff
        return min(s.poll_max, max(s.poll_min, hint))

    def retry_delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Exponential backoff with full jitter, never shorter than Retry-After — but never
        longer than retry_cap either (an outage is handled by the circuit breaker)."""
        s = self.settings
        delay = retry_delay(attempt, retry_after=retry_after, base=s.retry_base,
                            cap=s.retry_cap, rng=self.rng)
        return min(delay, s.retry_cap)

    async def sleep(self, seconds: float) -> bool:
        """Sleep unless the worker stops first; False when it is stopping."""
        if self.stop.is_set():
            return False
        with suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), max(0.0, seconds))
        return not self.stop.is_set()

    # -- hosts -------------------------------------------------------------------------------

    def breaker(self, url_or_host: str) -> CircuitBreaker:
        return self.breakers.for_host(url_or_host)

    @property
    def jsoc_breaker(self) -> CircuitBreaker:
        return self.breakers.for_host(self.settings.jsoc_url)

    def host_open(self, url_or_host: str) -> bool:
        """True while the host's breaker is open (an outage): do not start work for it."""
        return self.breaker(url_or_host).state is BreakerState.OPEN

    async def wait_for_jsoc(self) -> bool:
        """Wait while JSOC's breaker is open; False if the worker stops meanwhile."""
        breaker = self.jsoc_breaker
        while breaker.state is BreakerState.OPEN:
            if not await self.sleep(max(breaker.retry_in(), 0.01)):
                return False
        return not self.stop.is_set()

    def connection_limit(self, host: str) -> int:
        """Connections allowed to a download host (``host[:port]`` as stored on files)."""
        return download_connection_limit(self.settings, host)

    # -- tasks -------------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str,
              wake: tuple[str, ...] = (), about: dict[str, Any] | None = None
              ) -> asyncio.Task[Any]:
        """Run in-flight work as a task the worker drains on shutdown; when it ends, wake the
        ``wake`` stages. ``about``: the job/export/file its log lines name."""
        task = asyncio.create_task(coro, name=name, context=context_with(**(about or {})))
        self.tasks.add(task)
        task.add_done_callback(lambda t: self._task_done(t, wake))
        return task

    def _task_done(self, task: asyncio.Task[Any], wake: tuple[str, ...]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())
        if wake:
            self.wakers.poke(*wake)

    def lease_valid_until(self, claimed_at: float) -> float:
        """Monotonic time until which a lease taken at ``claimed_at`` surely still holds (the
        later of the claim and the last renewal, plus the lease, minus a safety margin)."""
        seconds = self.settings.lease_seconds
        return max(claimed_at, self.renewed_at) + seconds - min(2.0, seconds / 4)

    def held_files(self) -> HeldFiles:
        """The files whose leases the heartbeat renews: those the lanes hold and those whose
        outcome waits in the recorder. Other downloading rows this worker owns are orphans
        (handed back), unless a claim is in flight (its rows are not listed yet)."""
        ids = frozenset(self.holding["downloading"]) | self.recorder.pending_ids()
        return HeldFiles(ids, None if self.claims_in_flight else self.now())

    @property
    def disk(self) -> DiskWatch:
        """The worker-wide disk-full condition of the download root."""
        if self._disk is None:
            self._disk = DiskWatch(self.download_root)
        return self._disk

    def holding_summary(self) -> dict[str, Any]:
        """What this worker holds, for its heartbeat row (and a disk-full condition)."""
        summary: dict[str, Any] = {kind: sorted(map(str, ids))
                                   for kind, ids in self.holding.items()}
        if self._disk is not None and self._disk.full is not None:
            summary["disk_full"] = self._disk.summary()
        return summary


def make_session(settings: Settings) -> aiohttp.ClientSession:
    """The worker's one HTTP session: one connection pool with keep-alive. Per-host politeness
    is enforced by the claims, so the pool only bounds the total."""
    connector = aiohttp.TCPConnector(limit=settings.global_download_limit + EXTRA_CONNECTIONS,
                                     limit_per_host=0, keepalive_timeout=30.0)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30.0, sock_read=120.0)
    return aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False,
                                 headers={"User-Agent": user_agent()})


def make_breakers(settings: Settings,
                  clock: Callable[[], float] | None = None) -> HostBreakers:
    cooldown = min(BREAKER_COOLDOWN_MAX, max(settings.retry_cap, settings.poll_min))
    if clock is None:
        return HostBreakers(BREAKER_THRESHOLD, cooldown)
    return HostBreakers(BREAKER_THRESHOLD, cooldown, clock)


@asynccontextmanager
async def open_context(settings: Settings, repo: Repo, stop: asyncio.Event,
                       worker_id: str) -> AsyncIterator[StageContext]:
    """A StageContext with its HTTP session and JSOC client (closed on exit)."""
    session = make_session(settings)
    jsoc = JsocClient(settings.jsoc_url, session=session)
    recorder = OutcomeRecorder(repo, max_batch=settings.commit_files,
                               interval=settings.commit_seconds)
    assert settings.download_dir is not None
    manifests = ManifestWriter(repo, settings.download_dir)
    try:
        ctx = StageContext(settings=settings, repo=repo, jsoc=jsoc, session=session,
                           worker_id=worker_id, stop=stop, breakers=make_breakers(settings),
                           recorder=recorder)
        recorder.on_settled = lambda: ctx.wakers.poke_at_most_every(  # chunks may have closed
            "plan", PLAN_WAKE_SECONDS)
        metrics.PROCESS.breaker_sources.append(ctx.breakers.states)
        recorder.on_done = manifests.files_done
        yield ctx
    finally:
        with suppress(NameError, ValueError):
            metrics.PROCESS.breaker_sources.remove(ctx.breakers.states)
        await recorder.close()
        await manifests.close()
        await jsoc.close()
        await session.close()
