"""Read-only endpoints the dashboard needs beside the job API: a job's exports (JSOC request
ids and statuses, with their chunk's progress) and the politeness figures (pending exports per
notify email, active download connections per host, each against its limit)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field

from service.api.handlers import ctx, parse_query
from service.api.openapi import Endpoint
from service.api.problems import json_response
from service.api.schemas import MAX_PAGE, _Query
from service.db.models import EXPORT_STATES
from service.db.repo_overview import ExportView, Politeness
from service.settings import Settings
from service.stages.context import download_connection_limit

ExportState = Literal[EXPORT_STATES]  # type: ignore[valid-type]


class ExportListQuery(_Query):
    state: ExportState | None = Field(None, description="Only exports in this state")
    limit: int = Field(100, ge=1, le=MAX_PAGE, description="Page size")
    offset: int = Field(0, ge=0, description="Exports to skip (from next_offset)")


class ExportOut(BaseModel):
    """One JSOC export request of a job, with the chunk (time range) it exports."""

    id: int
    chunk_id: int
    request_id: str | None = Field(description="JSOC's request id (JSOC_...) once submitted")
    state: ExportState
    jsoc_status: int | None = Field(description="JSOC's last status code for the request")
    method: str | None
    protocol: str | None
    polls: int
    error: str | None
    created_at: datetime
    submitted_at: datetime | None
    ready_at: datetime | None
    expires_at: datetime | None
    next_poll_at: datetime | None
    chunk_state: str
    start_time: str | None = Field(description="Start of the chunk's time range (JSOC time)")
    end_time: str | None
    files_open: int = Field(description="Files of the chunk pending or downloading")
    files_done: int
    files_failed: int
    files_skipped: int
    bytes_done: int
    bytes_expected: int


class ExportPage(BaseModel):
    items: list[ExportOut]
    limit: int
    offset: int
    next_offset: int | None = Field(description="Offset of the next page; null on the last")


class EmailLoad(BaseModel):
    email: str
    pending_exports: int = Field(description="Exports reserving, submitted or polling")
    limit: int = Field(description="max_pending_exports_per_email")


class HostLoad(BaseModel):
    host: str
    active_connections: int = Field(description="Download connections held now (live leases)")
    limit: int = Field(description="Connections allowed to this host")


class PolitenessOut(BaseModel):
    """JSOC's limits as they stand now, counted over every worker (from the database)."""

    emails: list[EmailLoad]
    hosts: list[HostLoad]


def export_out(view: ExportView) -> ExportOut:
    e, c = view.export, view.chunk
    return ExportOut(
        id=e.id, chunk_id=e.chunk_id, request_id=e.request_id, state=e.state,
        jsoc_status=e.jsoc_status, method=e.method, protocol=e.protocol, polls=e.polls,
        error=e.error, created_at=e.created_at, submitted_at=e.submitted_at,
        ready_at=e.ready_at, expires_at=e.expires_at, next_poll_at=e.next_poll_at,
        chunk_state=c.state, start_time=c.start_time, end_time=c.end_time,
        files_open=c.files_open, files_done=c.files_done, files_failed=c.files_failed,
        files_skipped=c.files_skipped, bytes_done=c.bytes_done, bytes_expected=c.bytes_expected)


def politeness_out(p: Politeness, settings: Settings) -> PolitenessOut:
    emails = [EmailLoad(email=email, pending_exports=n,
                        limit=settings.max_pending_exports_per_email)
              for email, n in p.pending_by_email.items()]
    hosts = [HostLoad(host=host, active_connections=n,
                      limit=download_connection_limit(settings, host))
             for host, n in p.connections_by_host.items()]
    return PolitenessOut(emails=emails, hosts=hosts)


async def list_exports(request: web.Request) -> web.Response:
    """GET /jobs/{id}/exports: the job's exports in id order, optionally one state."""
    q = parse_query(request, ExportListQuery)
    views = await ctx(request).repo.list_job_exports(
        request.match_info["job_id"], q.state, limit=q.limit + 1, offset=q.offset)
    next_offset = q.offset + q.limit if len(views) > q.limit else None
    return json_response(ExportPage(items=[export_out(v) for v in views[: q.limit]],
                                    limit=q.limit, offset=q.offset, next_offset=next_offset))


async def politeness(request: web.Request) -> web.Response:
    """GET /politeness: pending exports per email and connections per host, with limits."""
    c = ctx(request)
    return json_response(politeness_out(await c.repo.politeness(), c.settings))


OVERVIEW_ENDPOINTS: list[Endpoint] = [
    Endpoint("GET", "/jobs/{job_id}/exports", list_exports, "listExports",
             "List a job's exports", response=ExportPage, query=ExportListQuery,
             errors=(400, 404)),
    Endpoint("GET", "/politeness", politeness, "politeness",
             "Pending exports per email and download connections per host, with limits",
             response=PolitenessOut),
]
