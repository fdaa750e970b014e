"""Submission stage: one exp_request per claimed chunk, under the per-email pending limit that
the repository's claim enforces across every worker.

Rules (docs/jsoc-protocol.md §3.8, §5.1): a url_quick + as-is request answered with status 0 is
ready at once (no staging, files listed directly); 3 splits the chunk; 4/25 fail it with JSOC's
message; 7 means another export of the email is pending: wait for it by polling it, then submit
once more — never resubmit in a loop. If this worker might already have submitted (it took over
a dead worker's reservation, or an earlier attempt got no answer), the pending export may be
this chunk's own, or another client's with the same email: the request is not adopted blindly
but sent again once the pending one is done, and JSOC's duplicate rule (same records, template,
protocol and method within 24 h) answers with the original id, so nothing is staged twice and
another client's export is never mistaken for ours. Transient failures are retried with backoff
while the reservation is kept.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime

from service.db.repo import ExportClaim, LeaseLost
from service.jobspec import JobSpec, SpecError
from service.jsoc.client import ExportReply
from service.jsoc.metadata import SeriesMeta
from service.jsoc.status import JsocError, JsocPendingLimitError, StatusKind
from service.ops import metrics
from service.stages.context import StageContext
from service.stages.method_choice import method_for_chunk
from service.stages.placement import PlacementError
from service.stages.plan import split_or_fail
from service.stages.poll import index_header, ready_files
from service.stages.reply_errors import note_malformed
from service.validation import parse_job_spec

log = logging.getLogger(__name__)

PENDING_COUNT_SECONDS = 3600.0  # pending exports count for 60 min (docs/jsoc-protocol.md §7.2)
STILL_PENDING = frozenset({1, 2, 6, 12})


async def submit_tick(ctx: StageContext) -> bool:
    """Claim chunks to export (while their emails have free slots) and submit each."""
    if ctx.host_open(ctx.settings.jsoc_url):
        return False
    did = False
    while not ctx.stop.is_set():
        claim = await ctx.repo.claim_chunk_to_export(
            ctx.worker_id, lease_seconds=ctx.settings.lease_seconds,
            max_pending_per_email=ctx.settings.max_pending_exports_per_email)
        if claim is None:
            break
        did = True
        ctx.holding["submitting"].add(claim.chunk_id)
        ctx.spawn(Submission(ctx, claim).run(), name=f"submit-{claim.chunk_id}",
                  about={"job": claim.job_id, "export": claim.export_id},
                  wake=("submit",))
    return did


class Submission:
    """Submitting one chunk's export, from the claim to a recorded outcome."""

    def __init__(self, ctx: StageContext, claim: ExportClaim) -> None:
        self.ctx, self.claim = ctx, claim
        self.maybe_sent = claim.resumed  # JSOC may already have this request
        self.attempt = 0

    async def run(self) -> None:
        try:
            await self._run()
        except LeaseLost as exc:  # another worker took the chunk over: the outcome is theirs
            log.info("chunk %s: %s", self.claim.chunk_id, exc)
        finally:
            self.ctx.holding["submitting"].discard(self.claim.chunk_id)

    async def _run(self) -> None:
        try:
            spec = parse_job_spec(self.claim.spec)
            meta = await self._meta(spec)
            if meta is not None:
                await self._submit(spec, meta)
        except (SpecError, PlacementError) as exc:
            await self._fail(str(exc), None)
        except LeaseLost:
            raise
        except Exception as exc:  # never keep a reservation nobody works on
            log.exception("submitting chunk %s failed", self.claim.chunk_id)
            await self.ctx.repo.fail_export(
                self.claim.export_id, error=f"submission failed: {type(exc).__name__}: {exc}",
                lease_token=self.claim.lease_token, retry_at=self.ctx.later(
                    self.ctx.retry_delay(3)))

    async def _meta(self, spec: JobSpec) -> SeriesMeta | None:
        while await self.ctx.wait_for_jsoc():
            try:
                return await self.ctx.jsoc.series_struct(spec.series_name)
            except JsocError as exc:
                if exc.kind is not StatusKind.TRANSIENT:
                    raise
                await self._backoff(exc)
        await self._abandon()
        return None

    async def _submit(self, spec: JobSpec, meta: SeriesMeta) -> None:
        ctx, claim = self.ctx, self.claim
        method = await method_for_chunk(ctx, spec, meta, chunk_id=claim.chunk_id,
                                        est_records=claim.est_records,
                                        est_bytes=claim.chunk.est_bytes)
        while await ctx.wait_for_jsoc():
            sent_at = ctx.now()
            try:
                reply = await ctx.jsoc.exp_request(claim.chunk.recordset, claim.notify_email,
                                                   method=method, protocol=spec.protocol,
                                                   filenamefmt=meta.export_filenamefmt())
            except JsocPendingLimitError as exc:
                ctx.jsoc_breaker.record_success()
                if not await self._wait_for_pending(exc.pending_ids):
                    break
                continue
            except JsocError as exc:
                if exc.kind is StatusKind.TRANSIENT:
                    self.maybe_sent = True  # the request may have arrived before the failure
                    await note_malformed(ctx, claim.job_id, exc, "exp_request")
                    await self._backoff(exc)
                    continue
                ctx.jsoc_breaker.record_success()
                if exc.kind is StatusKind.TOO_LARGE:
                    await self._split(spec, meta, exc.message)
                else:
                    await self._fail(exc.message, exc.status)
                return
            ctx.jsoc_breaker.record_success()
            await self._record(spec, meta, reply, method, sent_at)
            return
        await self._abandon()

    async def _record(self, spec: JobSpec, meta: SeriesMeta, reply: ExportReply,
                      method: str, sent_at: datetime) -> None:
        ctx, claim = self.ctx, self.claim
        if reply.status == 0 and not reply.request_id:  # url_quick: no staging, files listed
            files = await ready_files(ctx, spec, meta, reply, claim.chunk.recordset)
            await ctx.repo.record_export_ready(claim.export_id, files=files,
                                               index=index_header(reply),
                                               lease_token=claim.lease_token,
                                               method=reply.method or method,
                                               protocol=reply.protocol or spec.protocol)
            log.info("chunk %s: quick export with %d file(s)", claim.chunk_id, len(files))
            ctx.wakers.poke("download")  # nothing to poll
            return
        await ctx.repo.record_export_submitted(
            claim.export_id, request_id=reply.request_id, status=reply.status,
            wait=0.0 if reply.status == 0 else ctx.poll_delay(reply.wait, 0),
            lease_token=claim.lease_token, method=reply.method or method,
            protocol=reply.protocol or spec.protocol, sent_at=sent_at)
        log.info("chunk %s: export %s submitted (%s)", claim.chunk_id, reply.request_id,
                 reply.method or method)
        ctx.wakers.poke("poll")  # its files are listed once a poll finds it ready

    async def _wait_for_pending(self, pending_ids: list[str]) -> bool:
        """Poll the exports JSOC says are pending until none is; False if stopping."""
        ctx = self.ctx
        if not pending_ids:  # a per-IP limit: nothing to poll, back off
            self.attempt += 1
            return await ctx.sleep(max(ctx.settings.poll_min, ctx.retry_delay(self.attempt)))
        deadline, polls = time.monotonic() + PENDING_COUNT_SECONDS, 0
        while time.monotonic() < deadline:
            waits = []
            for request_id in pending_ids:
                try:
                    reply = await ctx.jsoc.exp_status(request_id, check=False)
                except JsocError:
                    waits.append(ctx.poll_delay(None, polls))
                    continue
                if reply.status in STILL_PENDING:
                    waits.append(ctx.poll_delay(reply.wait, polls))
            if not waits:
                return True
            polls += 1
            if not await ctx.sleep(min(waits)):
                return False
        return True

    async def _backoff(self, exc: JsocError) -> None:
        self.ctx.jsoc_breaker.record_failure()
        metrics.RETRIES.labels("submit").inc()
        log.warning("chunk %s: JSOC unavailable (%s); retrying", self.claim.chunk_id, exc)
        await self.ctx.sleep(self.ctx.retry_delay(self.attempt, getattr(exc, "retry_after",
                                                                        None)))
        self.attempt += 1

    async def _split(self, spec: JobSpec, meta: SeriesMeta, message: str) -> None:
        c = self.claim
        await split_or_fail(self.ctx, spec, meta, export_id=c.export_id, chunk_id=c.chunk_id,
                            chunk=c.chunk, reason=message, chunk_token=c.lease_token,
                            export_token=c.lease_token)

    async def _fail(self, message: str, status: int | None) -> None:
        await self.ctx.repo.fail_export(self.claim.export_id, error=message, jsoc_status=status,
                                        lease_token=self.claim.lease_token)

    async def _abandon(self) -> None:
        """The worker stops before an answer: a request JSOC may have stays reserved (the next
        worker takes it over and resubmits; JSOC's duplicate rule returns the same export);
        otherwise the reservation is given back."""
        if self.maybe_sent:
            return
        await self.ctx.repo.fail_export(self.claim.export_id, error="not submitted: worker "
                                        "stopped", lease_token=self.claim.lease_token,
                                        retry_at=self.ctx.now())
