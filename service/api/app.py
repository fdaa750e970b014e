"""The aiohttp application: routes under /api/v1, problem+json errors, optional token auth."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from aiohttp.typedefs import Middleware

from service.api.admission import LoopBudget, make_admission_middleware
from service.api.auth import make_auth_middleware
from service.api.dashboard import add_dashboard, is_public
from service.api.guards import input_text_middleware
from service.api.handlers import (
    API_PREFIX,
    CONTEXT,
    ENDPOINTS,
    ApiContext,
    job_change_middleware,
    repo_errors_middleware,
)
from service.api.intake import SeriesLookup
from service.api.openapi import build_openapi
from service.api.ops import OPS_ENDPOINTS, add_ops_routes, public_paths
from service.api.overview import OVERVIEW_ENDPOINTS
from service.api.problems import problem_middleware
from service.db.repo import Repo
from service.jsoc.client import JsocClient
from service.jsoc.metadata import SeriesMeta
from service.settings import Settings
from service.version import package_version

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 1024 * 1024


async def _not_running(series: str) -> SeriesMeta:
    raise RuntimeError("the API app is not running")


def _jsoc_client(app: web.Application, settings: Settings, context: ApiContext) -> SeriesLookup:
    """Open a client of the configured JSOC server with the app (``context.jsoc``) and return
    a series-metadata lookup through it (``series_struct``)."""
    async def client_ctx(app: web.Application) -> AsyncIterator[None]:
        context.jsoc = JsocClient(settings.jsoc_url)
        yield
        await context.jsoc.close()

    app.cleanup_ctx.append(client_ctx)

    async def lookup(series: str) -> SeriesMeta:
        assert context.jsoc is not None, "the app is not running"
        return await context.jsoc.series_struct(series)

    return lookup


def create_app(settings: Settings, repo: Repo, *, series_lookup: SeriesLookup | None = None,
               shares_loop: bool = False) -> web.Application:
    """The API application. ``series_lookup`` defaults to JSOC's ``series_struct``; with
    ``shares_loop`` (the workers run on the same event loop) the API keeps to a bounded
    share of the loop (``admission.LoopBudget``)."""
    middlewares: list[Middleware] = [problem_middleware]
    token = settings.token_value
    if token:
        paths = public_paths(settings.metrics_public)
        middlewares.append(make_auth_middleware(
            token, public=lambda request: is_public(request) or request.path in paths))
    middlewares.append(input_text_middleware)
    middlewares.append(repo_errors_middleware)
    middlewares.append(job_change_middleware)
    middlewares.append(make_admission_middleware(budget=LoopBudget() if shares_loop else None))
    app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY_BYTES)
    context = ApiContext(settings=settings, repo=repo, series_lookup=_not_running,
                         version=package_version())
    jsoc_lookup = _jsoc_client(app, settings, context)
    context.series_lookup = series_lookup or jsoc_lookup
    endpoints = [*ENDPOINTS, *OVERVIEW_ENDPOINTS, *OPS_ENDPOINTS]
    context.openapi = build_openapi(endpoints, API_PREFIX, auth=bool(token),
                                    version=context.version)
    app[CONTEXT] = context
    for ep in (*ENDPOINTS, *OVERVIEW_ENDPOINTS):  # add_ops_routes adds OPS_ENDPOINTS
        app.router.add_route(ep.method, API_PREFIX + ep.path, ep.handler, name=ep.operation_id)
    add_dashboard(app)
    add_ops_routes(app)
    return app


@asynccontextmanager
async def running_api(settings: Settings, repo: Repo, *, host: str | None = None,
                      port: int | None = None, series_lookup: SeriesLookup | None = None,
                      shares_loop: bool = False) -> AsyncIterator[str]:
    """Serve the API until the block ends; yields its base URL (port 0 picks a free port)."""
    app = create_app(settings, repo, series_lookup=series_lookup, shares_loop=shares_loop)
    runner = web.AppRunner(app)
    await runner.setup()
    bind_host = host or settings.host
    site = web.TCPSite(runner, bind_host, settings.port if port is None else port)
    try:
        await site.start()
        actual_port = runner.addresses[0][1]
        url_host = f"[{bind_host}]" if ":" in bind_host else bind_host
        base_url = f"http://{url_host}:{actual_port}/"
        log.info("API and dashboard listening on %s (token %s)", base_url,
                 "required" if settings.token_value else "not required")
        yield base_url
    finally:
        await runner.cleanup()


async def serve_api(settings: Settings, repo: Repo, stop: asyncio.Event, *,
                    shares_loop: bool = False) -> None:
    """Serve the API on settings.host:settings.port until ``stop`` is set."""
    async with running_api(settings, repo, shares_loop=shares_loop):
        await stop.wait()
