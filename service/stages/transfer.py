"""The per-file work of a download lane, without its failure policy: progress reports, the
lease check before a file is put in place, placing a fetched file, linking a stored copy, and
adopting a verified file already at its destination (the disk is the journal).

Every outcome goes to the worker's group-commit recorder; none of these waits for a commit.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import shutil
import time
from pathlib import Path

from service.db.repo import FileClaim, LeaseLost
from service.db.repo_files import FileOutcome
from service.download.fetch import (
    FetchError,
    FetchLocalError,
    FetchResult,
    FetchVerifyError,
    place_part,
)
from service.download.limits import BreakerState
from service.download.paths import (
    can_sync_filesystem,
    part_path,
    refuse_symlink,
    replace_durably,
    safe_join,
)
from service.download.verify import VerificationError, is_fits_name, sha256_file, verify_file
from service.ops import metrics
from service.stages.context import StageContext
from service.stages.diskspace import is_disk_full

log = logging.getLogger(__name__)
# Files are renamed into place unsynced and made durable together by the group commit's
# syncfs (before their rows say done) where the system has it; else fsynced one by one.
FSYNC_EACH = not can_sync_filesystem()
INLINE_PLACE_BELOW = 256 << 10


def record(ctx: StageContext, outcome: FileOutcome,
           sync_dir: Path | None = None) -> asyncio.Future[bool]:
    """Queue an outcome for the next group commit; a final one ends this worker's hold."""
    if outcome.kind != "progress":
        ctx.holding["downloading"].discard(outcome.file_id)
    return ctx.recorder.add(outcome, sync_dir=sync_dir)


def retry_outcome(ctx: StageContext, claim: FileClaim, exc: FetchError,
                  bytes_done: int) -> FileOutcome:
    """What a failed transfer leads to: after progress, resume at once; while the host's
    circuit breaker is open, hand the file back without counting an attempt; after
    retry_max_attempts, give up; else retry with full-jitter backoff honouring Retry-After."""
    breaker = ctx.breaker(claim.url)
    log.info("file %s: %s", claim.file_id, exc)
    if is_disk_full(exc):  # the worker's condition, not the file's: no attempt counted
        disk_full(ctx, claim, str(exc))
        return FileOutcome(claim.file_id, "release", claim.lease_token, bytes_done=bytes_done)
    if bytes_done > claim.bytes_done:
        breaker.record_success()
        return FileOutcome(claim.file_id, "release", claim.lease_token, bytes_done=bytes_done)
    was_closed = breaker.state is BreakerState.CLOSED
    if not isinstance(exc, FetchVerifyError | FetchLocalError) and (
            exc.http_status is None or exc.http_status >= 500):
        breaker.record_failure()  # the host did not answer properly
    if breaker.state is not BreakerState.CLOSED:
        log.log(logging.WARNING if was_closed else logging.DEBUG,
                "%s is unavailable (circuit breaker open; attempts are not counted): %s",
                claim.host, exc)
        return FileOutcome(claim.file_id, "release", claim.lease_token, bytes_done=bytes_done)
    if claim.attempts + 1 >= ctx.settings.retry_max_attempts:
        return FileOutcome(claim.file_id, "fail", claim.lease_token, bytes_done=bytes_done,
                           error=f"gave up after {claim.attempts + 1} attempts: {exc}")
    delay = ctx.retry_delay(claim.attempts, exc.retry_after)
    return FileOutcome(claim.file_id, "retry", claim.lease_token, error=str(exc),
                       next_attempt_at=ctx.later(delay), bytes_done=bytes_done)


def retry_unexpected(ctx: StageContext, claim: FileClaim, exc: Exception) -> None:
    """An error no policy foresaw (an OSError placing the file, a bug): one log line, then
    the same policy as a failed transfer (attempts counted up to retry_max_attempts, disk
    full paused worker-wide); the lease is never kept."""
    if isinstance(exc, OSError):
        error: FetchError = FetchLocalError(f"placing the file: {one_line(exc)}",
                                            os_errno=exc.errno)
    else:
        log.debug("file %s: unexpected error", claim.file_id, exc_info=exc)
        error = FetchLocalError(one_line(exc))
    log.warning("file %s: %s", claim.file_id, error)
    record(ctx, retry_outcome(ctx, claim, error, claim.bytes_done))


def disk_full(ctx: StageContext, claim: FileClaim, message: str) -> None:
    """Start (once) the worker-wide disk-full pause, and say so on the file's job."""
    if ctx.disk.report(message):
        ctx.spawn(_tell_job(ctx, claim.job_id, f"disk full under {ctx.download_root}: "
                            f"downloads paused until space is freed ({message})"),
                  name="disk-full-event")


async def _tell_job(ctx: StageContext, job_id: str, message: str) -> None:
    try:
        await ctx.repo.add_event(job_id, "disk_full", message)
    except Exception as exc:  # the event is informative only
        log.warning("could not record the disk-full event (%s)", one_line(exc))


class Progress:
    """fetch_file callbacks: progress and validators go to the recorder (coalesced); a lease
    known to be lost stops the transfer (LeaseLost)."""

    def __init__(self, ctx: StageContext, claim: FileClaim) -> None:
        self.ctx, self.claim = ctx, claim
        self.bytes_done = claim.bytes_done

    def _check(self) -> None:
        if self.claim.file_id in self.ctx.recorder.lost:
            raise lease_lost(self.claim.file_id)

    async def progress(self, done: int) -> None:
        self._check()
        self.bytes_done = done
        record(self.ctx, FileOutcome(self.claim.file_id, "progress", self.claim.lease_token,
                                     bytes_done=done,
                                     lease_seconds=self.ctx.settings.lease_seconds))

    async def validator(self, value: str | None) -> None:
        """A fresh (200) response: its ETag / Last-Modified, for resuming later."""
        self._check()
        if self.bytes_done > 0:  # what was downloaded before is fetched again
            metrics.BYTES_REFETCHED.labels(self.claim.host).inc(self.bytes_done)
        self.bytes_done = 0
        is_etag = value is not None and value.startswith(('"', "W/"))
        record(self.ctx, FileOutcome(
            self.claim.file_id, "progress", self.claim.lease_token, bytes_done=0,
            etag=value if is_etag else None,
            last_modified=value if value is not None and not is_etag else None))


async def ensure_lease(ctx: StageContext, claim: FileClaim, claimed_at: float,
                       bytes_done: int) -> bool:
    """May this worker put the file in place? Yes while the lease surely holds (known from
    the claim and the renewals); past that, ask the database (and extend the lease)."""
    if claim.file_id in ctx.recorder.lost:
        return False
    if time.monotonic() < ctx.lease_valid_until(claimed_at):
        return True
    try:
        held = await ctx.repo.update_file_progress(claim.file_id, bytes_done, claim.lease_token,
                                                   lease_seconds=ctx.settings.lease_seconds)
    except LeaseLost:
        held = False
    except Exception as exc:  # the database is away: hand the file back once it returns
        log.warning("file %s: could not confirm its lease (%s); handing it back (%d bytes "
                    "kept in its part file)", claim.file_id, one_line(exc), bytes_done)
        record(ctx, FileOutcome(claim.file_id, "release", claim.lease_token,
                                bytes_done=bytes_done))
        return False
    if not held:
        log.warning("file %s: lease lost before it was put in place", claim.file_id)
        ctx.recorder.lost.add(claim.file_id)
    return held


def lease_lost(file_id: int) -> LeaseLost:
    """The error that stops work on a file (or tar) whose lease the recorder found lost (taken
    over by another worker, or the job cancelled)."""
    return LeaseLost(f"file {file_id}: lease lost; stopped writing it")


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (at most 300 characters), for a log line."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


async def place_fetched(ctx: StageContext, claim: FileClaim, result: FetchResult,
                        dest: Path) -> None:
    """Verify and rename a complete part file (a body held in memory is verified, then
    written), then record it done; the group commit makes it durable before the row says so
    (where syncfs is missing it is fsynced here). Raises FetchVerifyError for a bad file."""
    place = functools.partial(place_part, result.path, dest, expected_size=claim.size_expected,
                              sync_dir=False, sync_file=FSYNC_EACH, body=result.body)
    # a small file without its own fsync (a header check, a write and a rename) is placed
    # here, quicker than in a thread: this task runs while the lane waits for the next
    # response, and the lane did not write it as it arrived (its body was held in memory)
    small = result.size < INLINE_PLACE_BELOW and not FSYNC_EACH
    size = place() if small else await asyncio.to_thread(place)
    sha = result.sha256 or (await asyncio.to_thread(sha256_file, dest)).hexdigest()
    record(ctx, FileOutcome(claim.file_id, "done", claim.lease_token, sha256=sha, size=size),
           sync_dir=dest.parent)


async def adopt_in_place(ctx: StageContext, claim: FileClaim, dest: Path) -> bool:
    """A verified file already at the destination whose row did not say so (the process died
    between the rename and the commit), or a complete FITS body still in its ``.part`` when
    the listing gave its size (it died before the rename; without a size a part cut at an HDU
    boundary could pass for complete): record it done instead of fetching it again. A file
    recorded there for other content is left to be replaced."""
    part = part_path(dest)
    refuse_symlink(part)  # a planted link is never adopted (nor followed)
    whole_part = (claim.size_expected is not None and is_fits_name(dest.name)
                  and part.is_file() and part.stat().st_size == claim.size_expected)
    if not dest.is_file() and not whole_part:
        return False
    if claim.size_expected is None and not is_fits_name(dest.name):
        return False  # nothing to verify it by: after a power cut it could be incomplete
    known = await ctx.repo.stored_key_at(claim.dest_path)
    if known is not None and known != claim.file_key:
        return False
    try:
        size, sha = await asyncio.to_thread(_adopt, dest, part, claim.size_expected)
    except (OSError, VerificationError) as exc:
        log.info("file %s: %s is not a complete copy (%s); fetching it", claim.file_id, dest, exc)
        return False
    log.info("file %s: adopted the verified file already at %s", claim.file_id, dest)
    record(ctx, FileOutcome(claim.file_id, "done", claim.lease_token, sha256=sha, size=size),
           sync_dir=dest.parent)
    return True


def _adopt(dest: Path, part: Path, expected: int | None) -> tuple[int, str]:
    """(size, sha256) of the verified file at ``dest``, renaming a complete FITS ``part``
    into place first; VerificationError when neither is complete (a part is then kept for
    resuming)."""
    if dest.is_file():
        return _verified(dest, expected)
    size, sha = _verified(part, expected, fits=True)
    replace_durably(part, dest, sync_dir=False, sync_file=FSYNC_EACH)
    return size, sha


def _verified(path: Path, expected: int | None, *, fits: bool | None = None,
              display_name: str | None = None) -> tuple[int, str]:
    """Verify a file (size; FITS structure when ``fits`` or its name says so) and return its
    (size, sha256). ``display_name``: the name to judge and report by (a .part file's)."""
    verify_file(path, expected_size=expected, fits=fits, display_name=display_name)
    return path.stat().st_size, sha256_file(path).hexdigest()


async def link_stored(ctx: StageContext, claim: FileClaim) -> None:
    """Place an already stored file (hard link, else copy), verified, and record it done.
    Raises OSError / VerificationError when the stored copy is unusable."""
    assert claim.source_path is not None
    source = safe_join(ctx.download_root, claim.source_path)
    dest = safe_join(ctx.download_root, claim.dest_path)
    size, sha = await asyncio.to_thread(_link_verified, source, dest, claim.size_expected)
    record(ctx, FileOutcome(claim.file_id, "done", claim.lease_token, sha256=sha, size=size),
           sync_dir=dest.parent)


def _link_verified(source: Path, dest: Path, expected: int | None) -> tuple[int, str]:
    """Hard-link (or copy) source to dest via a .part name; returns (size, sha256)."""
    if not source.is_file():
        raise FileNotFoundError(f"{source} is missing")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    refuse_symlink(part)
    part.unlink(missing_ok=True)
    try:
        os.link(source, part)
    except OSError:
        shutil.copyfile(source, part)
    try:
        size, sha = _verified(part, expected, display_name=dest.name)
    except (OSError, VerificationError):
        part.unlink(missing_ok=True)
        raise
    replace_durably(part, dest, sync_dir=False, sync_file=FSYNC_EACH)
    return size, sha
