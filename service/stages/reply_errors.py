"""Malformed JSOC replies made visible: each is recorded on the job (``recent_errors``) while
the stage retries with backoff, so a broken JSOC never looks like a quiet wait."""

from __future__ import annotations

import logging

from service.jsoc.status import JsocError, JsocMalformedReply
from service.stages.context import StageContext

log = logging.getLogger(__name__)
EVENT_KIND = "jsoc_malformed_reply"


async def note_malformed(ctx: StageContext, job_id: str, exc: JsocError, doing: str) -> None:
    """Record ``exc`` on the job if it is a malformed reply (other errors are not events)."""
    if not isinstance(exc, JsocMalformedReply):
        return
    log.warning("job %s: %s: %s; retrying with backoff", job_id, doing, exc)
    try:
        await ctx.repo.add_event(job_id, EVENT_KIND, f"{doing}: {exc}; retrying",
                                 level="warning")
    except Exception as err:  # the job was deleted meanwhile, or the database is away
        log.info("job %s: could not record the malformed reply: %s", job_id, err)
