"""Download stage: bounded parallel downloads (a global limit in this worker, a per-host limit
across all workers through the claim), resumable and verified (service.download.fetch).

A file whose content is already stored (same record and segment, fetched for another job) is
hard-linked (or copied) from there instead. Progress (bytes_done and the validator for
If-Range) is recorded every few MB / seconds, fenced by the lease token: when the lease was
lost the transfer stops at once. Failures: transient ones are retried with full-jitter backoff
honouring Retry-After; while a host's circuit breaker is open (outage) the file is handed back
without counting an attempt; 404/410 on an export file means the export expired (re-export).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from pathlib import Path

from service.db.models import LOCAL_HOST
from service.db.repo import FileClaim
from service.download.fetch import (
    FetchError,
    FetchPermanentError,
    FetchResult,
    FetchVerifyError,
    fetch_file,
)
from service.download.limits import BreakerState
from service.download.paths import UnsafePathError, part_path, replace_durably, safe_join
from service.download.verify import VerificationError, sha256_file, verify_file
from service.jsoc.status import JsocError
from service.stages.context import StageContext

log = logging.getLogger(__name__)

PROGRESS_BYTES = 8 << 20
PROGRESS_SECONDS = 2.0
EXPIRED_HTTP = (404, 410)


class LeaseGone(Exception):
    """The file's lease was taken over (or the job cancelled): stop writing it."""


async def download_tick(ctx: StageContext) -> bool:
    """Claim files for every host with work, within the global and per-host limits."""
    busy = len(ctx.holding["downloading"])
    free = ctx.settings.global_download_limit - busy
    if free <= 0 or ctx.stop.is_set():
        return False
    claimed = 0
    for host in await ctx.repo.list_download_hosts():
        if free - claimed <= 0:
            break
        if host != LOCAL_HOST and ctx.host_open(f"http://{host}/"):
            continue
        limit = ctx.connection_limit(host)
        claims = await ctx.repo.claim_files_to_download(
            ctx.worker_id, host, max_per_host=limit, limit=min(limit, free - claimed),
            lease_seconds=ctx.settings.lease_seconds)
        for claim in claims:
            ctx.holding["downloading"].add(claim.file_id)
            ctx.spawn(download_file(ctx, claim), name=f"download-{claim.file_id}")
        claimed += len(claims)
    return claimed > 0


async def download_file(ctx: StageContext, claim: FileClaim) -> None:
    """Fetch (or link) one claimed file and record the outcome."""
    tracker = Progress(ctx, claim)
    try:
        if claim.source_path:
            await copy_stored(ctx, claim)
        else:
            await fetch_claimed(ctx, claim, tracker)
    except LeaseGone:
        log.info("file %s: lease lost; stopped writing it", claim.file_id)
    except asyncio.CancelledError:
        await asyncio.shield(_hand_back(ctx, claim))
        raise
    except Exception as exc:  # never keep a lease nobody works on
        log.exception("file %s: download failed", claim.file_id)
        await ctx.repo.schedule_retry(claim.file_id, next_attempt_at=ctx.later(
            ctx.retry_delay(claim.attempts)), error=f"{type(exc).__name__}: {exc}",
            lease_token=claim.lease_token, bytes_done=tracker.bytes_done)
    finally:
        ctx.holding["downloading"].discard(claim.file_id)


async def _hand_back(ctx: StageContext, claim: FileClaim) -> None:
    """Shutdown: keep the .part file, record how far it got, release the lease."""
    done = claim.bytes_done
    if not claim.source_path:
        try:
            part = part_path(safe_join(ctx.download_root, claim.dest_path))
            done = part.stat().st_size if part.exists() else 0
        except (OSError, UnsafePathError):
            pass
    await ctx.repo.release_file(claim.file_id, lease_token=claim.lease_token, bytes_done=done)


class Progress:
    """fetch_file callbacks: record bytes_done and validators, fenced by the lease token."""

    def __init__(self, ctx: StageContext, claim: FileClaim) -> None:
        self.ctx, self.claim = ctx, claim
        self.bytes_done = claim.bytes_done

    async def progress(self, done: int) -> None:
        self.bytes_done = done
        if not await self.ctx.repo.update_file_progress(
                self.claim.file_id, done, self.claim.lease_token,
                lease_seconds=self.ctx.settings.lease_seconds):
            raise LeaseGone

    async def validator(self, value: str | None) -> None:
        """A fresh (200) response: store its ETag / Last-Modified before bytes arrive."""
        self.bytes_done = 0
        is_etag = value is not None and value.startswith(('"', "W/"))
        if not await self.ctx.repo.update_file_progress(
                self.claim.file_id, 0, self.claim.lease_token,
                etag=value if is_etag else None,
                last_modified=value if value is not None and not is_etag else None):
            raise LeaseGone


async def fetch_claimed(ctx: StageContext, claim: FileClaim, tracker: Progress) -> None:
    try:
        dest = safe_join(ctx.download_root, claim.dest_path)
    except UnsafePathError as exc:
        await ctx.repo.fail_file(claim.file_id, str(exc), lease_token=claim.lease_token)
        return
    breaker = ctx.breaker(claim.url)
    try:
        result = await fetch_file(
            ctx.session, claim.url, dest, expected_size=claim.size_expected,
            etag=claim.etag or claim.last_modified, on_progress=tracker.progress,
            on_validator=tracker.validator, progress_bytes=PROGRESS_BYTES,
            progress_seconds=PROGRESS_SECONDS)
    except FetchPermanentError as exc:
        breaker.record_success()  # the host answered
        if exc.http_status in EXPIRED_HTTP and await _export_expired(ctx, claim):
            return
        await ctx.repo.fail_file(claim.file_id, str(exc), lease_token=claim.lease_token)
        return
    except FetchError as exc:
        await _retry(ctx, claim, exc)
        return
    breaker.record_success()
    await _finish(ctx, claim, result)


async def _finish(ctx: StageContext, claim: FileClaim, result: FetchResult) -> None:
    sha = result.sha256 or (await asyncio.to_thread(sha256_file, result.path)).hexdigest()
    if not await ctx.repo.finish_file(claim.file_id, sha256=sha, size=result.size,
                                      lease_token=claim.lease_token):
        log.warning("file %s finished after its lease was lost", claim.file_id)
    ctx.waker.poke()


async def _retry(ctx: StageContext, claim: FileClaim, exc: FetchError) -> None:
    """A transfer that made progress resumes at once; otherwise back off (or give up after
    retry_max_attempts). While the host's breaker is open no attempt is counted."""
    breaker, repo = ctx.breaker(claim.url), ctx.repo
    log.info("file %s: %s", claim.file_id, exc)
    if exc.bytes_done > claim.bytes_done:
        breaker.record_success()
        await repo.release_file(claim.file_id, lease_token=claim.lease_token,
                                bytes_done=exc.bytes_done)
        return
    was_closed = breaker.state is BreakerState.CLOSED
    if not isinstance(exc, FetchVerifyError) and (exc.http_status is None
                                                  or exc.http_status >= 500):
        breaker.record_failure()  # the host did not answer properly
    if breaker.state is not BreakerState.CLOSED:
        log.log(logging.WARNING if was_closed else logging.DEBUG,
                "%s is unavailable (circuit breaker open; attempts are not counted): %s",
                claim.host, exc)
        await repo.release_file(claim.file_id, lease_token=claim.lease_token,
                                bytes_done=exc.bytes_done)
        return
    if claim.attempts + 1 >= ctx.settings.retry_max_attempts:
        await repo.fail_file(claim.file_id, f"gave up after {claim.attempts + 1} attempts: {exc}",
                             lease_token=claim.lease_token)
        return
    delay = ctx.retry_delay(claim.attempts, exc.retry_after)
    await repo.schedule_retry(claim.file_id, next_attempt_at=ctx.later(delay), error=str(exc),
                              lease_token=claim.lease_token, bytes_done=exc.bytes_done)


async def _export_expired(ctx: StageContext, claim: FileClaim) -> bool:
    """On 404/410: if JSOC says the file's export expired (5), export the chunk again."""
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
    await ctx.repo.mark_export_expired(claim.export_id, error=reply.error or "export expired")
    ctx.waker.poke()
    return True


async def copy_stored(ctx: StageContext, claim: FileClaim) -> None:
    """Place an already stored file (hard link, else copy), verify it, finish the row."""
    assert claim.source_path is not None
    try:
        source = safe_join(ctx.download_root, claim.source_path)
        dest = safe_join(ctx.download_root, claim.dest_path)
    except UnsafePathError as exc:
        await ctx.repo.fail_file(claim.file_id, str(exc), lease_token=claim.lease_token)
        return
    try:
        size, sha = await asyncio.to_thread(_link_verified, source, dest, claim.size_expected)
    except (OSError, VerificationError) as exc:
        log.warning("stored copy %s unusable (%s); fetching %s again", source, exc, claim.url)
        await _forget_stored(ctx, claim)
        return
    if not await ctx.repo.finish_file(claim.file_id, sha256=sha, size=size,
                                      lease_token=claim.lease_token):
        log.warning("file %s placed after its lease was lost", claim.file_id)
    ctx.waker.poke()


def _link_verified(source: Path, dest: Path, expected: int | None) -> tuple[int, str]:
    """Hard-link (or copy) source to dest via a .part name; returns (size, sha256)."""
    if not source.is_file():
        raise FileNotFoundError(f"{source} is missing")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    part.unlink(missing_ok=True)
    try:
        os.link(source, part)
    except OSError:
        shutil.copyfile(source, part)
    try:
        verify_file(part, expected_size=expected, display_name=dest.name)
        sha = sha256_file(part).hexdigest()
    except (OSError, VerificationError):
        part.unlink(missing_ok=True)
        raise
    replace_durably(part, dest)  # a copy (not a link) must reach the disk before the rename
    return dest.stat().st_size, sha


async def _forget_stored(ctx: StageContext, claim: FileClaim) -> None:
    """The stored copy is gone or bad: every file waiting for it fetches from its URL."""
    await ctx.repo.forget_stored_file(claim.file_key)
    ctx.waker.poke()
