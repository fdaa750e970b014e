"""A download lane's work on the tar row of a url-tar export (see ``service.db.tar_rows``).

The tar is streamed and unpacked as it arrives (``unpack_tar``): each listed member goes
straight to its member row's destination; index files and names nobody listed are skipped, and
nothing else is written (no tar on disk). As each member is durably in place, one outcome marks
its row done and moves the tar row's resume offset (``bytes_done``, a member boundary) in the
same group commit, fenced by the tar row's lease. A cut stream resumes from the last boundary
recorded (``Range`` + ``If-Range`` with the tar's validator); members already done are never
rewritten. At the end the tar row is done and listed members the tar did not hold fail.

Errors: retryable ones resume (at once if members were placed, else after a backoff, and give
up after retry_max_attempts); an unsafe member (link, device, escaping name) or another
permanent error fails the tar row and the members still waiting; 404/410 on an expired export
exports the chunk again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from service.db.repo import UNFENCED, FileClaim, LeaseLost
from service.db.repo_files import FileOutcome
from service.db.tar_rows import MemberDone, TarMember
from service.download.fetch import FetchError, FetchLocalError, FetchPermanentError
from service.download.paths import UnsafePathError, safe_join
from service.download.untar import MemberResult, UnsafeMemberError, unpack_tar
from service.ops import metrics
from service.stages.context import StageContext
from service.stages.transfer import (
    ensure_lease,
    lease_lost,
    one_line,
    record,
    retry_outcome,
)

log = logging.getLogger(__name__)

EXPIRED_HTTP = (404, 410)
ExpiredCheck = Callable[[FileClaim], Awaitable[bool]]


class TarTransfer:
    """Unpacking one leased tar row into its member rows (see the module docstring).

    ``export_expired(claim)``: on 404/410, True when the export expired and was handled.
    """

    def __init__(self, ctx: StageContext, claim: FileClaim, claimed_at: float,
                 export_expired: ExpiredCheck) -> None:
        self.ctx, self.claim, self.claimed_at = ctx, claim, claimed_at
        self.export_expired = export_expired
        self.members: dict[str, TarMember] = {}  # waiting, by name in the tar
        self.placing: dict[str, TarMember] = {}  # being written, not yet reported
        self.offset = claim.bytes_done  # last member boundary handed to the recorder
        self.committed = claim.bytes_done  # last one known to be committed
        self.placed = 0

    async def run(self) -> None:
        """Unpack the tar; every outcome goes to the recorder (never raises but on cancel)."""
        ctx, claim = self.ctx, self.claim
        try:
            if claim.file_id not in ctx.recorder.lost:
                await self._transfer()
        except LeaseLost:
            log.info("tar %s: lease lost; stopped unpacking it", claim.file_id)
            ctx.holding["downloading"].discard(claim.file_id)
        except asyncio.CancelledError:
            await asyncio.shield(self._hand_back())
            raise
        except Exception as exc:  # never keep a lease nobody works on; e.g. disk full
            log.debug("tar %s: unpacking failed", claim.file_id, exc_info=exc)
            self._retry(FetchLocalError(f"unpacking: {one_line(exc)}",
                                        os_errno=exc.errno if isinstance(exc, OSError)
                                        else None))

    async def _transfer(self) -> None:
        ctx, claim = self.ctx, self.claim
        await self._load_members()
        if not self.members:  # every member was placed otherwise: nothing to fetch
            record(ctx, FileOutcome(claim.file_id, "tar_done", claim.lease_token,
                                    bytes_done=claim.bytes_done))
            return
        breaker = ctx.breaker(claim.url)
        try:
            result = await unpack_tar(
                ctx.session, claim.url, ctx.download_root, self.place,
                start_offset=claim.bytes_done, validator=claim.etag or claim.last_modified,
                on_member=self.on_member, on_validator=self.on_validator)
        except UnsafeMemberError as exc:
            breaker.record_success()
            self._fail(str(exc))
            return
        except FetchPermanentError as exc:
            breaker.record_success()  # the host answered
            if exc.http_status in EXPIRED_HTTP and await self.export_expired(claim):
                return
            self._fail(str(exc))
            return
        except FetchError as exc:
            self._retry(exc)
            return
        breaker.record_success()
        record(ctx, FileOutcome(claim.file_id, "tar_done", claim.lease_token,
                                bytes_done=result.end_offset))
        log.info("tar %s: %d member(s) placed from %s; %d listed but not in it",
                 claim.file_id, self.placed, claim.url, len(self.members) + len(self.placing))

    async def _load_members(self) -> None:
        """The member rows still waiting; one whose destination is unsafe fails alone."""
        for member in await self.ctx.repo.tar_members(self.claim.file_id):
            try:
                safe_join(self.ctx.download_root, member.dest_path)
            except UnsafePathError as exc:
                record(self.ctx, FileOutcome(member.file_id, "fail", UNFENCED, error=str(exc)))
                continue
            self.members.setdefault(member.name, member)

    def place(self, name: str) -> str | None:
        """Where a member goes (relative to the root); None skips it (index files, names
        nobody listed, members already done, a name met again)."""
        member = self.members.pop(name, None)
        if member is None:
            return None
        self.placing[name] = member
        return member.dest_path

    async def on_member(self, result: MemberResult) -> None:
        """A member is durably in place: record its row done and the new resume offset."""
        ctx, claim = self.ctx, self.claim
        if claim.file_id in ctx.recorder.lost:
            raise lease_lost(claim.file_id)
        if not await ensure_lease(ctx, claim, self.claimed_at, self.committed):
            raise lease_lost(claim.file_id)
        member = self.placing.pop(result.name, None)
        if member is None:
            return
        self._progress(FileOutcome(
            claim.file_id, "tar_progress", claim.lease_token, bytes_done=result.end_offset,
            members=(MemberDone(member.file_id, result.sha256, result.size),),
            lease_seconds=ctx.settings.lease_seconds))
        self.placed += 1

    async def on_validator(self, value: str | None) -> None:
        """A fresh (200) response: the tar is read from its start, with this validator."""
        if self.claim.file_id in self.ctx.recorder.lost:
            raise lease_lost(self.claim.file_id)
        if self.offset > 0:  # the tar is read again from its start
            metrics.BYTES_REFETCHED.labels(self.claim.host).inc(self.offset)
        is_etag = value is not None and value.startswith(('"', "W/"))
        self.committed = 0
        self._progress(FileOutcome(
            self.claim.file_id, "tar_progress", self.claim.lease_token, bytes_done=0,
            etag=value if is_etag else None,
            last_modified=value if value is not None and not is_etag else None))

    def _progress(self, outcome: FileOutcome) -> None:
        offset = outcome.bytes_done or 0
        self.offset = offset
        future = self.ctx.recorder.add(outcome)

        def committed(f: asyncio.Future[bool]) -> None:
            if not f.cancelled() and f.result() and offset >= self.committed:
                self.committed = offset
        future.add_done_callback(committed)

    def _fail(self, error: str) -> None:
        """The tar row fails, and with it the members still waiting for it."""
        log.warning("tar %s failed: %s", self.claim.file_id, error)
        record(self.ctx, FileOutcome(self.claim.file_id, "fail", self.claim.lease_token,
                                     error=error, bytes_done=self.offset))

    def _retry(self, exc: FetchError) -> None:
        """Resume at once after progress (from the last member boundary); otherwise the
        file download policy (backoff, breaker, give up after retry_max_attempts)."""
        outcome = retry_outcome(self.ctx, self.claim, exc, self.offset)
        if outcome.kind == "fail":
            self._fail(outcome.error or str(exc))
        else:
            record(self.ctx, outcome)

    async def _hand_back(self) -> None:
        """Shutdown: release the tar row at the last member boundary recorded."""
        record(self.ctx, FileOutcome(self.claim.file_id, "release", self.claim.lease_token,
                                     bytes_done=self.offset))
        await self.ctx.recorder.flush()
