"""Group commit of file outcomes: many downloads, one transaction.

Download lanes hand every outcome (done, retry, fail, release, progress) to the recorder and
go on with the next file. The recorder commits what has gathered when ``max_batch`` outcomes are
waiting or ``interval`` seconds after the first one, whichever comes first, and whenever a
caller asks (``flush``). Before the commit it makes the files renamed into place durable (one
syncfs per filesystem, or an fsync per directory where files were fsynced one by one), so a
row says ``done`` only once its file is durable; a crash before the commit leaves
verified files in place whose rows lag, and those are adopted on restart (the disk is the
journal). Progress outcomes of one file are coalesced (the newest wins; the members a tar row
placed are gathered into one outcome).

If the database cannot be reached the outcomes stay queued and the commit is tried again with
a growing delay (one log line per failure, no traceback), however long the outage lasts; the
worker's heartbeat keeps renewing the leases of those files meanwhile (``pending_ids``), and
lanes stop taking new files while ``MAX_BACKLOG`` outcomes wait (``room``), so memory stays
bounded. Only a stopping worker gives up, after ``CLOSE_SECONDS``: the leases of what it could
not record run out, and files it placed are adopted when claimed again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass, replace
from pathlib import Path

from service.db.repo import FileClaim, Repo
from service.db.repo_files import FileOutcome
from service.download.paths import sync_filesystems
from service.ops import metrics

log = logging.getLogger(__name__)

MAX_TRACKED = 200_000
RETRY_MAX_SECONDS = 5.0
CLOSE_SECONDS = 15.0  # how long a stopping worker keeps trying to record what is left
MAX_BACKLOG = 4096  # outcomes waiting for the database before lanes pause
COALESCED = ("progress", "tar_progress")  # several of one file's lease become one outcome


@dataclass
class _Entry:
    outcome: FileOutcome
    future: asyncio.Future[bool]
    sync_dir: Path | None
    superseded: bool = False  # a progress report made moot by the file's final outcome


class OutcomeRecorder:
    """Collects file outcomes and commits them in groups (see the module docstring)."""

    def __init__(self, repo: Repo, *, max_batch: int = 256, interval: float = 0.2) -> None:
        self.repo = repo
        self.max_batch = max_batch
        self.interval = interval
        self.on_settled: Callable[[], None] | None = None  # after done/fail outcomes commit
        self.on_done: Callable[[list[int]], None] | None = None  # files committed done
        self.lost: set[int] = set()  # files whose lease turned out to be gone
        self.sources: dict[int, tuple[str, str]] = {}  # leased file id -> (job, host), metrics
        self.leases: dict[int, int] = {}  # leased file id -> token of its newest lease here
        self._entries: list[_Entry] = []
        self._progress: dict[int, int] = {}  # file id -> index of its queued progress entry
        self._kick = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._committing: list[_Entry] = []  # the group being written now
        self._drained = asyncio.Event()  # set whenever the backlog is below MAX_BACKLOG
        self._drained.set()
        self.failing_since: float | None = None  # monotonic start of a database outage

    def pending_ids(self) -> frozenset[int]:
        """Files whose outcome is queued or being committed (their leases must be kept)."""
        return frozenset(e.outcome.file_id for e in (*self._committing, *self._entries))

    async def room(self) -> None:
        """Wait while the backlog is full (the database is unreachable): a lane calls this
        before taking its next file, so the outcomes held in memory stay bounded."""
        if len(self._entries) >= MAX_BACKLOG:
            self._drained.clear()
            self._kick.set()
        await self._drained.wait()

    def add(self, outcome: FileOutcome, *, sync_dir: Path | None = None) -> asyncio.Future[bool]:
        """Queue an outcome; the future says (after the commit) whether the fence held.
        ``sync_dir``: a directory a file was renamed into, made durable before the commit."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        queued = self._progress.get(outcome.file_id) if outcome.kind in COALESCED else None
        if queued is not None and _mergeable(self._entries[queued].outcome, outcome):
            entry = self._entries[queued]
            entry.outcome = _merge(entry.outcome, outcome)
            return entry.future
        if outcome.kind in COALESCED:
            self._progress[outcome.file_id] = len(self._entries)
        elif outcome.file_id in self._progress:
            self._supersede(self._progress.pop(outcome.file_id), outcome)
        self._entries.append(_Entry(outcome, future, sync_dir))
        self._ensure_running()
        if len(self._entries) >= self.max_batch:
            self._kick.set()
        return future

    def track(self, claims: Iterable[FileClaim]) -> None:
        """Remember the job and host of leased files (metric labels of their outcomes)."""
        if len(self.sources) > MAX_TRACKED:  # ids whose outcome never came (lease lost)
            self.sources.clear()
            self.leases.clear()
        self.sources.update((c.file_id, (c.job_id, c.host)) for c in claims)
        self.leases.update((c.file_id, c.lease_token) for c in claims)

    def _supersede(self, index: int, final: FileOutcome) -> None:
        """A small file finished before its progress was written: the final outcome carries
        all that matters (a release or retry keeps the progress: it says where to resume)."""
        entry = self._entries[index]
        if (entry.outcome.kind == "progress" and final.kind in ("done", "fail")
                and entry.outcome.lease_token == final.lease_token):
            entry.superseded = True

    async def flush(self, *, give_up_after: float | None = None) -> None:
        """Commit everything queued so far, retrying while the database is unreachable (for
        at most ``give_up_after`` seconds, then the outcomes are dropped: their leases run
        out, and files already in place are adopted when claimed again)."""
        delay, deadline = 0.05, None
        if give_up_after is not None:
            deadline = time.monotonic() + give_up_after
        while True:
            try:
                await self._commit()
                self._recovered()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed(exc, delay)
            if deadline is not None and time.monotonic() + delay > deadline:
                self._drop()
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_SECONDS)

    def _failed(self, exc: Exception, delay: float) -> None:
        """One line per failed commit (the first with the traceback at debug level)."""
        if self.failing_since is None:
            self.failing_since = time.monotonic()
            log.debug("recording file outcomes failed", exc_info=exc)
        log.warning("recording %d file outcome(s) failed (%s: %s); they are kept and "
                    "retried in %.2fs", len(self._entries), type(exc).__name__,
                    str(exc).splitlines()[0][:200] if str(exc) else "", delay)

    def _recovered(self) -> None:
        if self.failing_since is not None:
            log.warning("recorded the held file outcomes after %.1fs without the database",
                        time.monotonic() - self.failing_since)
            self.failing_since = None
        if len(self._entries) < MAX_BACKLOG:
            self._drained.set()

    def _drop(self) -> None:
        log.error("gave up recording %d file outcome(s): the database stayed unreachable",
                  len(self._entries))
        for entry in self._entries:
            if not entry.future.done():
                entry.future.set_result(False)
        self._entries, self._progress = [], {}
        self._drained.set()

    async def close(self) -> None:
        """Commit what is left and stop the background committer."""
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._entries:
            await self.flush(give_up_after=CLOSE_SECONDS)

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="outcome-recorder")

    async def _run(self) -> None:
        while self._entries:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), self.interval)
            self._kick.clear()
            await self.flush()

    async def _commit(self) -> None:
        async with self._lock:
            entries, self._entries, self._progress = self._entries, [], {}
            if not entries:
                return
            self._committing = entries
            try:
                dirs = {e.sync_dir for e in entries if e.sync_dir is not None}
                if dirs:
                    await asyncio.to_thread(sync_filesystems, dirs)
                live = [e for e in entries if not e.superseded]
                results = await self.repo.record_file_outcomes([e.outcome for e in live])
            except BaseException:
                self._requeue(entries)
                raise
            finally:
                self._committing = []
        for entry in entries:
            if entry.superseded and not entry.future.done():
                entry.future.set_result(True)
        self._settle(live, results)

    def _requeue(self, entries: list[_Entry]) -> None:
        """Put a failed group back in front of what arrived meanwhile (order kept)."""
        self._entries = entries + self._entries
        self._progress = {e.outcome.file_id: i for i, e in enumerate(self._entries)
                          if e.outcome.kind in COALESCED}

    def _settle(self, entries: list[_Entry], results: list[bool]) -> None:
        final = False
        for entry, ok in zip(entries, results, strict=True):
            if not ok:
                if not self._leased_again(entry.outcome):
                    self.lost.add(entry.outcome.file_id)
                if entry.outcome.kind in ("done", "progress"):
                    log.warning("file %s: %s not recorded, its lease was lost",
                                entry.outcome.file_id, entry.outcome.kind)
            final = final or entry.outcome.settles
            if not entry.future.done():
                entry.future.set_result(ok)
        self._count(entries, results)
        if final and self.on_settled is not None:
            self.on_settled()
        if self.on_done is not None:
            done = [m.file_id for e, ok in zip(entries, results, strict=True) if ok
                    for m in e.outcome.members] + [
                e.outcome.file_id for e, ok in zip(entries, results, strict=True)
                if ok and e.outcome.kind == "done"]
            if done:
                self.on_done(done)

    def _leased_again(self, outcome: FileOutcome) -> bool:
        """Whether this worker leased the file anew since the outcome's lease (after a
        database outage the lanes reclaim expired leases while older outcomes still wait):
        that outcome's failed fence then says nothing of the new lease, which must not
        count as lost (its lane would skip the file and the heartbeat keep its lease)."""
        newest = self.leases.get(outcome.file_id)
        return None not in (newest, outcome.lease_token) and newest != outcome.lease_token

    def _count(self, entries: list[_Entry], results: list[bool]) -> None:
        """Metrics of one group commit: files and bytes done by job and host, retries and
        failures (summed per commit, never per byte)."""
        done, retries = [], 0
        for entry, ok in zip(entries, results, strict=True):
            o = entry.outcome
            job, host = self.sources.get(o.file_id, ("", ""))
            if ok and o.kind == "done":
                done.append((job, host, o.size or 0))
            elif ok and o.kind == "retry":
                retries += 1
            elif ok and o.kind == "fail":
                metrics.FILE_FAILURES.labels(host).inc()
            if ok and o.members:  # url-tar members placed from the tar of this job
                done += [(job, host, m.size) for m in o.members]
            if o.kind not in COALESCED:
                self.sources.pop(o.file_id, None)
                if self.leases.get(o.file_id) == o.lease_token:
                    del self.leases[o.file_id]
        if done:
            metrics.record_downloads(done)
        if retries:
            metrics.RETRIES.labels("download").inc(retries)


def _mergeable(old: FileOutcome, new: FileOutcome) -> bool:
    return old.kind == new.kind and old.lease_token == new.lease_token


def _merge(old: FileOutcome, new: FileOutcome) -> FileOutcome:
    """Two progress reports of one file: the newer values, keeping validators already set;
    of a tar, every member placed (in order) and the validators of its newest response."""
    if new.kind == "tar_progress":
        fresh = new.etag is not None or new.last_modified is not None
        return replace(old, bytes_done=new.bytes_done, members=old.members + new.members,
                       etag=new.etag if fresh else old.etag,
                       last_modified=new.last_modified if fresh else old.last_modified,
                       lease_seconds=new.lease_seconds or old.lease_seconds)
    return FileOutcome(new.file_id, "progress", new.lease_token,
                       bytes_done=new.bytes_done if new.bytes_done is not None
                       else old.bytes_done,
                       etag=new.etag or old.etag, last_modified=new.last_modified
                       or old.last_modified, lease_seconds=new.lease_seconds or old.lease_seconds)
