"""Polling stage: every due export is polled concurrently, each at the pace of JSOC's ``wait``
hint (bounded by poll_min/poll_max, backing off when the hint is stale).

Outcomes: 0 → file rows with their destinations (the email's slot frees, so the next chunk can
be submitted while this one downloads); 1/2/12 pending and 6 transient → poll again later;
3 → split the chunk; 5 → export again (files already done are kept); 4 and others → the chunk
fails with JSOC's own message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from service.db.repo import UNFENCED, LeaseLost, PollClaim, StoredChunk
from service.db.tar_rows import tar_key
from service.jobspec import JobSpec, SpecError
from service.jsoc.client import ExportItem, ExportReply
from service.jsoc.metadata import SeriesMeta
from service.jsoc.replies import file_name_problem
from service.jsoc.status import JsocError, StatusKind, error_for_status
from service.ops import metrics
from service.safetext import clean_text
from service.stages.context import StageContext
from service.stages.placement import (
    PlacementError,
    destination,
    keyword_table,
    lookup_fields,
    rs_list_keys,
)
from service.stages.plan import split_or_fail
from service.stages.reply_errors import note_malformed
from service.states import ChunkState
from service.validation import parse_job_spec

log = logging.getLogger(__name__)

POLL_BATCH = 20  # exports claimed per tick (each email has at most a few pending)


def index_header(reply: ExportReply) -> dict[str, Any]:
    """What is kept of an export's index.json: the header, not the (long) file list."""
    return {k: v for k, v in reply.raw.items() if k != "data"}


def reply_message(reply: ExportReply) -> str:
    """JSOC's own error text with the status, e.g. 'Request too large [status=3]'."""
    return error_for_status(reply.status, reply.error, request_id=reply.request_id).message


async def ready_files(ctx: StageContext, spec: JobSpec, meta: SeriesMeta, reply: ExportReply,
                      recordset: str) -> list[dict[str, Any]]:
    """File rows of a finished export (status 0): URL, content key and destination path;
    for a url-tar export the tar row and one row per member (see ``service.db.tar_rows``)."""
    items = ctx.jsoc.export_items(reply, meta.segment_names)
    fields = lookup_fields(spec.path_template, meta)
    table: dict[str, dict[str, Any]] = {}
    if fields and any(item.record for item in items):
        listing = await ctx.jsoc.rs_list(recordset.split("{", 1)[0],
                                         keys=rs_list_keys(fields), rec_index=True)
        table = keyword_table(listing, fields)
    files: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for item, problem in zip(items, name_problems(reply, items), strict=True):
        row = _file_row(spec, meta, item, problem, table.get(item.record.lower()), recordset)
        dest = row["dest_path"]
        if not row.get("error") and dest in seen:
            raise PlacementError(f"path_template {spec.path_template!r} gives the same path "
                                 f"{dest!r} to {seen[dest]} and {item.record}{{{item.segment}}}; "
                                 "add {record}, {segment} or a prime key to make paths unique")
        seen[dest] = f"{item.record}{{{item.segment}}}"
        files.append(row)
    if reply.missing:
        log.warning("export %s lists %d record(s) without a file", reply.request_id,
                    len(reply.missing))
    return files


def _file_row(spec: JobSpec, meta: SeriesMeta, item: ExportItem, problem: str | None,
              extra: dict[str, Any] | None, recordset: str) -> dict[str, Any]:
    """One listed file's row: placed by the path template, or failed with ``problem`` (a bad
    name from JSOC, or a path the template cannot give this file) while the others go on."""
    if problem is None and item.record:
        try:
            dest = destination(spec.path_template, meta=meta, record=item.record,
                               segment=item.segment, filename=item.filename, extra=extra)
        except PlacementError as exc:
            problem = str(exc)
    if problem is not None:
        return unfetchable(spec, item, problem)
    if item.record:
        key = f"{spec.protocol}:{item.record}:{item.segment or ''}"
    else:  # a url-tar export's tar row: unpacked by a lane into its members' rows
        dest, key = f"{meta.name}/{item.filename}", tar_key(spec.protocol, recordset)
    return {"record": item.record or recordset, "segment": item.segment, "file_key": key,
            "url": item.url, "dest_path": dest}


def name_problems(reply: ExportReply, items: list[ExportItem]) -> list[str | None]:
    """Per item, why JSOC's name for it cannot be used (None: fine). Items follow the reply's
    file rows; a url-tar export's tar comes first (its name is JSOC's tarfile)."""
    rows = reply.file_rows
    first = len(items) - len(rows)
    problems: list[str | None] = [None] * first
    problems += [file_name_problem(row.filename, row.record, path_ok=reply.is_quick)
                 for row in rows]
    return problems


def unfetchable(spec: JobSpec, item: ExportItem, problem: str) -> dict[str, Any]:
    """The row of a listed file that cannot be fetched: failed at once with ``problem``
    (its text made storable: JSOC's names may hold anything)."""
    record = clean_text(item.record)
    return {"record": record, "segment": item.segment and clean_text(item.segment),
            "file_key": clean_text(f"{spec.protocol}:{item.record}:{item.segment or ''}:"
                                   f"{item.filename}"),
            "url": clean_text(item.url), "dest_path": "", "error": problem}


async def poll_tick(ctx: StageContext) -> bool:
    """Claim the exports whose poll is due (batch after batch) and poll each in its own
    task; then wake the loop when the next poll is due."""
    claimed = 0
    while not ctx.host_open(ctx.settings.jsoc_url) and not ctx.stop.is_set():
        claims = await ctx.repo.claim_exports_to_poll(
            ctx.worker_id, limit=POLL_BATCH, lease_seconds=ctx.settings.lease_seconds)
        for claim in claims:
            ctx.holding["polling"].add(claim.export_id)
            ctx.spawn(poll_export(ctx, claim), name=f"poll-{claim.export_id}",
                      about={"job": claim.job_id, "export": claim.export_id},
                      wake=("poll",))  # its next poll is scheduled when it ends
        claimed += len(claims)
        if len(claims) < POLL_BATCH:
            break
    if not claimed:
        await _wake_when_due(ctx)
    return claimed > 0


async def _wake_when_due(ctx: StageContext) -> None:
    """Wake the poll loop when the next scheduled poll is due, not at its next idle check
    (which may come up to a few seconds later)."""
    due = await ctx.repo.next_poll_due()
    if due is None:
        return
    delay = (due - ctx.now()).total_seconds()
    if 0 < delay < ctx.settings.poll_max:
        asyncio.get_running_loop().call_later(delay, ctx.wakers.poke, "poll")


async def poll_export(ctx: StageContext, claim: PollClaim) -> None:
    """One exp_status for one export, and its outcome recorded."""
    try:
        if claim.request_id is None:  # a reservation recorded without an id: export again
            await ctx.repo.mark_export_expired(
                claim.export_id, error="no JSOC request id was recorded; exporting again")
            return
        try:
            reply = await ctx.jsoc.exp_status(claim.request_id, check=False)
        except JsocError as exc:
            ctx.jsoc_breaker.record_failure()
            await note_malformed(ctx, claim.job_id, exc, f"exp_status {claim.request_id}")
            metrics.RETRIES.labels("poll").inc()
            await ctx.repo.record_poll(claim.export_id, status=-1, lease_token=claim.lease_token,
                                       wait=ctx.poll_delay(None, claim.polls + 1),
                                       error=f"exp_status failed: {exc}")
            return
        ctx.jsoc_breaker.record_success()
        await handle_reply(ctx, claim, reply)
    except LeaseLost as exc:  # another worker polls it now: this outcome is dropped
        log.info("export %s: %s", claim.export_id, exc)
    except Exception as exc:  # never keep the lease of an export nobody polls
        log.exception("polling export %s failed", claim.request_id)
        with contextlib.suppress(LeaseLost):
            await ctx.repo.record_poll(claim.export_id, status=-1, lease_token=claim.lease_token,
                                       wait=ctx.poll_delay(None, claim.polls + 1),
                                       error=f"poll failed: {type(exc).__name__}: {exc}")
    finally:
        ctx.holding["polling"].discard(claim.export_id)


async def handle_reply(ctx: StageContext, claim: PollClaim, reply: ExportReply) -> None:
    """Record what an exp_status answer means for the export and its chunk."""
    repo, kind = ctx.repo, reply.kind
    if kind is StatusKind.PENDING:
        await repo.record_poll(claim.export_id, status=reply.status, lease_token=claim.lease_token,
                               wait=ctx.poll_delay(reply.wait, claim.polls))
    elif kind is StatusKind.TRANSIENT:
        await repo.record_poll(claim.export_id, status=reply.status, lease_token=claim.lease_token,
                               wait=ctx.poll_delay(None, claim.polls + 1),
                               error=reply_message(reply))
    elif kind is StatusKind.EXPIRED:
        log.info("export %s expired; exporting the chunk again", claim.request_id)
        await repo.mark_export_expired(claim.export_id, error=reply_message(reply))
        ctx.wakers.poke("submit")
    elif kind is StatusKind.DONE:
        await _ready(ctx, claim, reply)
    elif kind is StatusKind.TOO_LARGE:
        await _split(ctx, claim, reply_message(reply))
    else:
        await repo.fail_export(claim.export_id, error=reply_message(reply),
                               jsoc_status=reply.status, lease_token=claim.lease_token)


async def _job(ctx: StageContext, job_id: str) -> tuple[JobSpec, SeriesMeta] | None:
    job = await ctx.repo.get_job(job_id)
    if job is None:
        return None
    spec = parse_job_spec(job.spec)
    return spec, await ctx.jsoc.series_struct(spec.series_name)


async def _ready(ctx: StageContext, claim: PollClaim, reply: ExportReply) -> None:
    seen_ready_at = ctx.now()  # where the export's staging ends (listing it is not staging)
    try:
        found = await _job(ctx, claim.job_id)
        if found is None:
            return
        spec, meta = found
        chunk = await _chunk(ctx, claim)
        recordset = chunk.recordset if chunk else spec.recordset or spec.series_name
        files = await ready_files(ctx, spec, meta, reply, recordset)
    except (PlacementError, SpecError) as exc:
        await ctx.repo.fail_export(claim.export_id, error=str(exc), jsoc_status=0,
                                   lease_token=claim.lease_token)
        return
    except JsocError as exc:  # metadata lookup failed: poll again later
        await note_malformed(ctx, claim.job_id, exc, "listing the export's records")
        await ctx.repo.record_poll(claim.export_id, status=0, lease_token=claim.lease_token,
                                   wait=ctx.poll_delay(None, claim.polls + 1),
                                   error=f"export ready, but: {exc}")
        return
    todo = await ctx.repo.record_export_ready(claim.export_id, files=files,
                                              index=index_header(reply),
                                              lease_token=claim.lease_token,
                                              seen_ready_at=seen_ready_at)
    log.info("export %s ready: %d file(s), %d to fetch", claim.request_id, len(files), todo)
    ctx.wakers.poke("download", "submit")


async def _chunk(ctx: StageContext, claim: PollClaim) -> StoredChunk | None:
    """The export's chunk (it is exporting while its export is polled)."""
    for chunk in await ctx.repo.list_chunks(claim.job_id, state=ChunkState.EXPORTING):
        if chunk.id == claim.chunk_id:
            return StoredChunk.of(chunk)
    return None


async def _split(ctx: StageContext, claim: PollClaim, message: str) -> None:
    found, chunk = await _job(ctx, claim.job_id), await _chunk(ctx, claim)
    if found is None or chunk is None:
        await ctx.repo.fail_export(claim.export_id, error=message, jsoc_status=3,
                                   lease_token=claim.lease_token)
        return
    spec, meta = found
    await split_or_fail(ctx, spec, meta, export_id=claim.export_id, chunk_id=claim.chunk_id,
                        chunk=chunk, reason=message, chunk_token=UNFENCED,
                        export_token=claim.lease_token)
