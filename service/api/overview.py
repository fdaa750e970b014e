"""Read-only endpoints the dashboard needs beside the job API: a job's exports (JSOC request
ids and statuses, with their chunk's progress) and the politeness figures (pending exports per
notify email, active download connections per host, each against its limit)."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, Field

from service.api.handlers import ctx, parse_query
from service.api.openapi import Endpoint
from service.api.problems import json_response
from service.api.schemas import MAX_OFFSET, MAX_PAGE, ExportOut, _Query, export_out
from service.db.repo_overview import Politeness
from service.settings import Settings
from service.stages.context import download_connection_limit
from service.states import ExportState


class ExportListQuery(_Query):
    state: ExportState | None = Field(None, description="Only exports in this state")
    limit: int = Field(100, ge=1, le=MAX_PAGE, description="Page size")
    offset: int = Field(0, ge=0, le=MAX_OFFSET, description="Exports to skip (from next_offset)")


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
