"""Download stage: one long-lived lane per host connection.

A lane holds one of the host's connection slots (cluster-wide, through the claim), leases a
batch of files of one job at a time (by count and bytes), and streams them back to back over
the worker's keep-alive connection. Each finished body is verified and renamed by a
finishing task while the lane already receives the next file; outcomes go to the group-commit
recorder, which makes the placed files durable before it records them. Between batches the
lane turns to the job served least recently, so a big job does not hold a small one up for
more than one batch.

Failures: transient ones are retried with full-jitter backoff honouring Retry-After; while a
host's circuit breaker is open (outage) files are handed back without counting an attempt and
the lane stops; 404/410 on an export file means the export expired (re-export), and the rest
of the batch from that export is dropped. A file already stored for another job is linked
from there instead of fetched. When a job is paused or cancelled, the file in flight
finishes and the rest of its leased files are handed back (the lane asks about once a
second).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections import deque
from pathlib import Path

from service.db.models import LOCAL_HOST
from service.db.repo import FileClaim, LeaseLost
from service.db.repo_files import FileOutcome
from service.db.tar_rows import is_tar_key
from service.download.fetch import (
    FetchError,
    FetchPermanentError,
    FetchResult,
    FetchVerifyError,
    fetch_file,
)
from service.download.paths import UnsafePathError, part_path, safe_join
from service.download.verify import VerificationError
from service.jsoc.status import JsocError
from service.ops.logs import log_context
from service.stages.context import StageContext
from service.stages.tar_transfer import TarTransfer
from service.stages.transfer import (
    Progress,
    adopt_in_place,
    ensure_lease,
    link_stored,
    place_fetched,
    record,
    retry_outcome,
    retry_unexpected,
)
from service.states import JobState

log = logging.getLogger(__name__)

PROGRESS_BYTES = 8 << 20
PROGRESS_SECONDS = 2.0
EXPIRED_HTTP = (404, 410)
MAX_FINISHING = 4  # files being verified and renamed while the lane receives the next
PREFETCH_AT = 8  # files left in the batch (at least) when the lane leases its next batch
JOB_CHECK_SECONDS = 1.0  # how often a lane asks whether a job whose files it holds still runs
_lane_numbers = itertools.count(1)


async def download_tick(ctx: StageContext) -> bool:
    """Open a lane for every host slot that has work, within the per-host and global limits."""
    if ctx.disk.blocked():  # disk full: claim nothing until space is back
        return False
    if sum(len(names) for names in ctx.lanes.values()) >= ctx.settings.global_download_limit:
        return False  # every lane this worker may run is running
    full = {host for host, names in ctx.lanes.items() if len(names) >= ctx.connection_limit(host)}
    opened = 0
    for host in await ctx.repo.list_download_hosts(skip=full):
        if host != LOCAL_HOST and ctx.host_open(f"http://{host}/"):
            continue
        while _room_for_lane(ctx, host):
            lane = Lane(ctx, host)
            batch = await lane.claim()
            if not batch:
                break
            lane.start(batch)
            opened += 1
    return opened > 0


def _room_for_lane(ctx: StageContext, host: str) -> bool:
    running = sum(len(names) for names in ctx.lanes.values())
    return (not ctx.stop.is_set() and running < ctx.settings.global_download_limit
            and len(ctx.lanes.get(host, ())) < ctx.connection_limit(host))


async def download_file(ctx: StageContext, claim: FileClaim) -> None:
    """Fetch (or link) one claimed file and commit its outcome before returning."""
    lane = Lane(ctx, claim.host)
    ctx.recorder.track([claim])
    await lane.process(claim)
    await lane.settle()


class Lane:
    """One connection's worth of downloading on one host (see the module docstring)."""

    def __init__(self, ctx: StageContext, host: str) -> None:
        self.ctx, self.host = ctx, host
        self.root = os.path.realpath(ctx.download_root)  # resolved once for the lane's files
        self.name = f"{ctx.worker_id}#{next(_lane_numbers)}"
        self.queue: deque[FileClaim] = deque()
        self.claimed_at: dict[int, float] = {}  # file id -> when its lease was taken
        self.finishing: set[asyncio.Task[None]] = set()
        self.next_batch: asyncio.Task[list[FileClaim]] | None = None
        self.job_runs: dict[str, tuple[float, bool]] = {}  # job id -> (checked at, runs)

    async def claim(self) -> list[FileClaim]:
        """Lease the next batch for this lane (empty when the host's slots are taken)."""
        ctx, s = self.ctx, self.ctx.settings
        started = time.monotonic()
        ctx.claims_in_flight += 1
        try:
            batch = await ctx.repo.claim_file_batch(
                ctx.worker_id, self.host, lane=self.name,
                max_per_host=ctx.connection_limit(self.host), max_files=s.download_batch_files,
                max_bytes=s.download_batch_mb << 20, lease_seconds=s.lease_seconds)
            self.claimed_at.update((c.file_id, started) for c in batch)
            ctx.holding["downloading"].update(c.file_id for c in batch)
        finally:
            ctx.claims_in_flight -= 1
        ctx.recorder.lost.difference_update(c.file_id for c in batch)  # leased anew
        ctx.recorder.track(batch)
        return batch

    def start(self, batch: list[FileClaim]) -> None:
        self.queue.extend(batch)
        self.ctx.lanes.setdefault(self.host, set()).add(self.name)
        self.ctx.spawn(self.run(), name=f"lane-{self.name}", wake=("download",))

    async def run(self) -> None:
        """Work through batch after batch until the host has nothing more for this lane."""
        ctx = self.ctx
        try:
            while self.queue:
                while self.queue and not self._should_stop():
                    if self.next_batch is None and len(self.queue) <= self._prefetch_at:
                        self.next_batch = asyncio.create_task(self.claim())  # overlapped
                    await ctx.recorder.room()  # while the database is away, bounded
                    claim = self.queue.popleft()
                    if await self._job_runs(claim.job_id):
                        await self.process(claim)
                    else:
                        self._hand_back_job(claim)
                if self._should_stop():
                    break
                self.queue.extend(await self._next())
        finally:
            await asyncio.shield(self._close())
            ctx.lanes.get(self.host, set()).discard(self.name)

    @property
    def _prefetch_at(self) -> int:
        """Files left when the next batch is leased: half a batch, so the claim (a few
        statements, tens of ms under load) is done before small files run out."""
        return max(PREFETCH_AT, self.ctx.settings.download_batch_files // 2)

    async def _next(self) -> list[FileClaim]:
        task, self.next_batch = self.next_batch, None
        return await (task if task is not None else self.claim())

    async def _job_runs(self, job_id: str) -> bool:
        """Whether the job still runs: a paused or cancelled job's leased files are not
        fetched (its file in flight finishes). Asked at most every JOB_CHECK_SECONDS per job;
        while the database cannot say, the lane goes on (its outcomes wait in the recorder)."""
        now = time.monotonic()
        known = self.job_runs.get(job_id)
        if known is not None and now - known[0] < JOB_CHECK_SECONDS:
            return known[1]
        try:
            job = await self.ctx.repo.get_job(job_id)
        except Exception as exc:  # the database is away
            log.debug("lane %s: cannot read job %s (%s)", self.name, job_id, exc)
            return True
        runs = job is not None and job.state == JobState.RUNNING
        self.job_runs[job_id] = (now, runs)
        return runs

    def _hand_back_job(self, claim: FileClaim) -> None:
        """Release ``claim`` and the queued files of its job (paused, cancelled or gone)."""
        mine = [claim, *(c for c in self.queue if c.job_id == claim.job_id)]
        self.queue = deque(c for c in self.queue if c.job_id != claim.job_id)
        for c in mine:
            self.claimed_at.pop(c.file_id, None)
            self.ctx.holding["downloading"].discard(c.file_id)
            record(self.ctx, FileOutcome(c.file_id, "release", c.lease_token))
        log.info("lane %s: job %s no longer runs; handed back %d leased file(s)", self.name,
                 claim.job_id, len(mine))

    def _should_stop(self) -> bool:
        return self.ctx.stop.is_set() or self.ctx.disk.full is not None or (
            self.host != LOCAL_HOST and self.ctx.host_open(f"http://{self.host}/"))

    async def _close(self) -> None:
        """Hand back what was not started, wait for the finishing work, commit."""
        if self.next_batch is not None:
            try:
                self.queue.extend(await self._next())
            except Exception:  # the lease of that batch (if any) runs out on its own
                log.exception("lane %s: leasing its next batch failed", self.name)
        for claim in self.queue:
            record(self.ctx, FileOutcome(claim.file_id, "release", claim.lease_token))
        self.queue.clear()
        await self.settle()

    async def settle(self) -> None:
        """Wait for the files being placed and commit every outcome so far."""
        if self.finishing:
            await asyncio.gather(*self.finishing, return_exceptions=True)
        await self.ctx.recorder.flush()

    async def process(self, claim: FileClaim) -> None:
        """Fetch, link or adopt one claimed file; its outcome goes to the recorder."""
        with log_context(job=claim.job_id, export=claim.export_id, file=claim.file_id):
            await self._process(claim)

    async def _process(self, claim: FileClaim) -> None:
        ctx = self.ctx
        if is_tar_key(claim.file_key):  # a url-tar export's tar: unpacked into its members
            claimed_at = self.claimed_at.pop(claim.file_id, 0.0)
            await TarTransfer(ctx, claim, claimed_at, self._export_expired).run()
            return
        try:
            if claim.file_id in ctx.recorder.lost:
                return
            if claim.source_path:
                await self._copy(claim)
            else:
                await self._fetch(claim)
        except LeaseLost:
            log.info("file %s: lease lost; stopped writing it", claim.file_id)
        except asyncio.CancelledError:
            await asyncio.shield(_hand_back(ctx, claim))
            raise
        except Exception as exc:  # never keep a lease nobody works on
            retry_unexpected(ctx, claim, exc)

    async def _fetch(self, claim: FileClaim) -> None:
        ctx = self.ctx
        try:
            dest = safe_join(self.root, claim.dest_path, root_is_real=True)
            if await adopt_in_place(ctx, claim, dest):
                return
        except UnsafePathError as exc:  # also a planted symlink: the file fails, naming it
            record(ctx, FileOutcome(claim.file_id, "fail", claim.lease_token, error=str(exc)))
            return
        breaker, tracker = ctx.breaker(claim.url), Progress(ctx, claim)
        try:
            result = await fetch_file(
                ctx.session, claim.url, dest, expected_size=claim.size_expected,
                etag=claim.etag or claim.last_modified, on_progress=tracker.progress,
                on_validator=tracker.validator, progress_bytes=PROGRESS_BYTES,
                progress_seconds=PROGRESS_SECONDS, place=False)
        except FetchPermanentError as exc:
            breaker.record_success()  # the host answered
            if exc.http_status in EXPIRED_HTTP and await self._export_expired(claim):
                return
            record(ctx, FileOutcome(claim.file_id, "fail", claim.lease_token, error=str(exc)))
            return
        except FetchError as exc:
            _retry(ctx, claim, exc)
            return
        except UnsafePathError as exc:
            record(ctx, FileOutcome(claim.file_id, "fail", claim.lease_token, error=str(exc)))
            return
        breaker.record_success()
        await self._finish_later(claim, result, dest)

    async def _finish_later(self, claim: FileClaim, result: FetchResult, dest: Path) -> None:
        while len(self.finishing) >= MAX_FINISHING:
            await asyncio.wait(self.finishing, return_when=asyncio.FIRST_COMPLETED)
        task = asyncio.create_task(self._finish(claim, result, dest),
                                   name=f"finish-{claim.file_id}")
        self.finishing.add(task)
        task.add_done_callback(self.finishing.discard)

    async def _finish(self, claim: FileClaim, result: FetchResult, dest: Path) -> None:
        ctx = self.ctx
        try:
            claimed_at = self.claimed_at.pop(claim.file_id, 0.0)
            on_disk = 0 if result.body is not None else result.size  # a held body is dropped
            if not await ensure_lease(ctx, claim, claimed_at, on_disk):
                ctx.holding["downloading"].discard(claim.file_id)
                return
            await place_fetched(ctx, claim, result, dest)
        except FetchVerifyError as exc:
            _retry(ctx, claim, exc)
        except UnsafePathError as exc:  # a symlink planted at the part name meanwhile
            record(ctx, FileOutcome(claim.file_id, "fail", claim.lease_token, error=str(exc)))
        except Exception as exc:
            retry_unexpected(ctx, claim, exc)

    async def _copy(self, claim: FileClaim) -> None:
        ctx = self.ctx
        try:
            await link_stored(ctx, claim)
        except UnsafePathError as exc:
            record(ctx, FileOutcome(claim.file_id, "fail", claim.lease_token, error=str(exc)))
        except (OSError, VerificationError) as exc:
            log.warning("stored copy of %s unusable (%s); fetching it again", claim.url, exc)
            record(ctx, FileOutcome(claim.file_id, "release", claim.lease_token))
            await ctx.recorder.flush()
            await ctx.repo.forget_stored_file(claim.file_key)
            ctx.wakers.poke("download")

    async def _export_expired(self, claim: FileClaim) -> bool:
        """On 404/410: if JSOC says the file's export expired (5), export the chunk again and
        drop the rest of this batch from that export."""
        ctx = self.ctx
        if claim.export_id is None:
            return False
        export = await ctx.repo.get_export(claim.export_id)
        if export is None or not export.request_id:
            return False
        try:
            reply = await ctx.jsoc.exp_status(export.request_id, check=False)
        except JsocError:
            return False
        if reply.status != 5:
            return False
        log.info("export %s expired while downloading; exporting again", export.request_id)
        await ctx.recorder.flush()  # outcomes of its files first: the expiry revokes leases
        await ctx.repo.mark_export_expired(claim.export_id, error=reply.error or "export expired")
        dropped = [c for c in self.queue if c.export_id == claim.export_id]
        self.queue = deque(c for c in self.queue if c.export_id != claim.export_id)
        for c in [claim, *dropped]:
            ctx.holding["downloading"].discard(c.file_id)
        ctx.wakers.poke("submit")
        return True


async def _hand_back(ctx: StageContext, claim: FileClaim) -> None:
    """Shutdown: keep the .part file, record how far it got, release the lease."""
    done = claim.bytes_done
    if not claim.source_path:
        try:
            part = part_path(safe_join(ctx.download_root, claim.dest_path))
            done = part.stat().st_size if part.exists() else 0
        except (OSError, UnsafePathError):
            pass
    record(ctx, FileOutcome(claim.file_id, "release", claim.lease_token, bytes_done=done))
    await ctx.recorder.flush()


def _retry(ctx: StageContext, claim: FileClaim, exc: FetchError) -> None:
    record(ctx, retry_outcome(ctx, claim, exc, exc.bytes_done))
