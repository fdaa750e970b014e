"""The worker: runs the stage loops (plan → submit → poll → download), heartbeats, and shuts
down gracefully.

Each loop claims work in short repository transactions, does the network part in tasks, and
records outcomes with fenced updates; the database is the truth, so any number of workers (in
one process or on several machines sharing Postgres) can run side by side, and a restart after
SIGKILL resumes from what was committed.

Shutdown (``stop`` set, e.g. on SIGTERM): stop claiming, let in-flight work finish for
``shutdown_grace_seconds``, cancel the rest (downloads record bytes_done and keep their .part
files), release every lease this worker holds, and return.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import suppress

from service.db.repo import Repo
from service.ops import metrics
from service.ops.logs import bind
from service.settings import Settings
from service.stages import download_tick, plan_tick, poll_tick, submit_tick
from service.stages.context import StageContext, open_context
from service.stages.transfer import one_line

log = logging.getLogger(__name__)

Tick = Callable[[StageContext], Awaitable[bool]]
STAGES: tuple[tuple[str, Tick], ...] = (
    ("plan", plan_tick), ("submit", submit_tick), ("poll", poll_tick),
    ("download", download_tick))
# what a change in the repository (its listeners' argument) gives work to; anything else
# (a job resumed or retried) may give work to every stage that claims
WOKEN_BY = {"job_created": ("plan",)}


def pid_space() -> str | None:
    """This process's pid namespace (``pid:[4026531836]``), so a pid is only compared with
    pids of the same namespace (containers on one host name); None where unknown."""
    try:
        return os.readlink("/proc/self/ns/pid")[:64]
    except OSError:
        return None


def process_alive(pid: int) -> bool:
    """Is ``pid`` a live process on this machine other than this one?"""
    if pid == os.getpid() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def new_worker_id() -> str:
    """``<hostname>-<pid>-<random>``: unique per process start, readable in listings."""
    host = socket.gethostname().split(".")[0][:32] or "host"
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Worker:
    """One worker on a repository: ``await Worker(settings, repo).run(stop)`` until ``stop``."""

    def __init__(self, settings: Settings, repo: Repo, *, worker_id: str | None = None) -> None:
        self.settings = settings
        self.repo = repo
        self.worker_id = worker_id or new_worker_id()
        self.ctx: StageContext | None = None
        self._heartbeat_failures = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set, then drain and release leases."""
        assert self.settings.download_dir is not None
        self.settings.download_dir.mkdir(parents=True, exist_ok=True)
        bind(worker=self.worker_id)
        async with open_context(self.settings, self.repo, stop, self.worker_id) as ctx:
            self.ctx = ctx
            log.info("worker %s started (download dir %s)", self.worker_id,
                     self.settings.download_dir)
            await self._reap(ctx)
            await self._heartbeat(ctx)
            wake = lambda what: ctx.wakers.poke(  # noqa: E731
                *WOKEN_BY.get(what, ("plan", "submit", "download")))
            self.repo.listeners.append(wake)
            heartbeat = asyncio.create_task(self._heartbeats(ctx), name="heartbeat")
            loops = [asyncio.create_task(self._loop(ctx, name, tick), name=f"loop-{name}")
                     for name, tick in STAGES]
            try:
                await stop.wait()
            finally:
                stop.set()
                ctx.wakers.poke()
                self.repo.listeners.remove(wake)
                await asyncio.shield(self._shutdown(ctx, loops, heartbeat))

    async def _shutdown(self, ctx: StageContext, loops: list[asyncio.Task[None]],
                        heartbeat: asyncio.Task[None]) -> None:
        await asyncio.gather(*loops, return_exceptions=True)
        await self._drain(ctx)
        heartbeat.cancel()
        with suppress(asyncio.CancelledError):
            await heartbeat
        released = await self.repo.release_leases(self.worker_id)
        log.info("worker %s stopped; released %d lease(s)", self.worker_id, released)

    async def _drain(self, ctx: StageContext) -> None:
        """Give in-flight work the grace period, then cancel what is left."""
        pending = set(ctx.tasks)
        if pending:
            log.info("worker %s: letting %d task(s) finish (up to %gs)", self.worker_id,
                     len(pending), self.settings.shutdown_grace_seconds)
            _done, pending = await asyncio.wait(
                pending, timeout=self.settings.shutdown_grace_seconds)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _loop(self, ctx: StageContext, name: str, tick: Tick) -> None:
        """Run one stage's tick until stopping, then wait until poked (or a while). A tick
        claims until its claim finds nothing, so it is not run again at once after doing
        work (that would be one more empty claim, a write transaction, each time); what
        gives a stage work pokes it, and the wait ends at once if that happened meanwhile."""
        idle, failures = ctx.idle_seconds, 0
        while not ctx.stop.is_set():
            try:
                did = await tick(ctx)
            except Exception as exc:  # e.g. the database is unreachable: log and back off
                failures += 1
                _log_failure(f"{name} stage failed; retrying", exc, failures)
                await ctx.sleep(ctx.retry_delay(min(failures, 3)))
                continue
            failures = 0
            await ctx.wakers.wait(name, ctx.idle_seconds if did else idle)
            idle = ctx.idle_seconds if did else min(idle * 2, ctx.max_idle_seconds)

    async def _heartbeats(self, ctx: StageContext) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_seconds)
            await self._heartbeat(ctx)
            await self._reap(ctx)

    async def _heartbeat(self, ctx: StageContext) -> None:
        """Refresh this worker's row (what it holds) and renew its leases."""
        started = time.monotonic()
        try:
            await self.repo.heartbeat(self.worker_id, hostname=socket.gethostname(),
                                      pid=os.getpid(), pid_space=pid_space(),
                                      holding=ctx.holding_summary(),
                                      renew_lease_seconds=self.settings.lease_seconds,
                                      files=ctx.held_files())
        except Exception as exc:
            self._heartbeat_failures += 1
            _log_failure(f"heartbeat of worker {self.worker_id} failed", exc,
                         self._heartbeat_failures)
            metrics.HEARTBEAT_FAILURES.labels(self.worker_id).inc()
            return
        self._heartbeat_failures = 0
        ctx.renewed_at = started
        metrics.HEARTBEATS.labels(self.worker_id).inc()
        metrics.LAST_HEARTBEAT.labels(self.worker_id).set_to_current_time()

    async def _reap(self, ctx: StageContext) -> None:
        """Release at once the work of workers known to be dead (a previous life of this
        daemon, a process gone on this host, or a worker silent for two leases)."""
        s = self.settings
        try:
            dead = await self.repo.reap_dead_workers(
                self.worker_id, hostname=socket.gethostname(), is_alive=process_alive,
                pid_space=pid_space(),
                stale_after=2 * s.lease_seconds)
        except Exception as exc:
            log.warning("looking for dead workers failed (%s)", one_line(exc))
            return
        if dead:
            log.info("released the work of dead worker(s) %s", ", ".join(dead))
            ctx.wakers.poke()


def _log_failure(what: str, exc: Exception, failures: int) -> None:
    """The first failure of a series with its traceback, the next ones as one line each."""
    if failures == 1:
        log.warning("%s (%s)", what, one_line(exc), exc_info=exc)
    else:
        log.warning("%s (%s; %d times in a row)", what, one_line(exc), failures)


async def run_workers(settings: Settings, repo: Repo, stop: asyncio.Event) -> None:
    """The worker part of ``jsoc-bulk serve`` (on the daemon's repository)."""
    await Worker(settings, repo).run(stop)
