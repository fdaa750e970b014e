"""Operator endpoints: ``GET /metrics`` (Prometheus text), ``GET /api/v1/health`` (liveness)
and ``GET /api/v1/ready`` (readiness). Health and ready never need the token (probes cannot
send one); /metrics needs it unless ``metrics_public``.

* health: 200 whenever the process answers; ``status`` is ``ok`` only while the database
  answers, JSOC is not known to be down and no live worker reports a worker-wide condition
  (disk full), else ``degraded`` (the body says which, and which worker).
* ready: 503 while the database is unreachable or its schema is not the newest; JSOC down
  or a worker's disk full does not make it 503 (the API still answers and accepts jobs,
  which wait out the condition; taking the API out of a load balancer would hide the very
  status an operator needs) but the body says since when, and ``status`` is ``degraded``.
  When no JSOC call told anything in the last minute, or the last one failed, ready asks
  JSOC itself (``show_series`` of a name that matches nothing; a failed probe means down).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator
from contextlib import suppress
from typing import Literal

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import GaugeMetricFamily, Metric
from pydantic import BaseModel, Field

from service.api.auth import make_auth_middleware
from service.api.handlers import API_PREFIX, CONTEXT, ApiContext, worker_stale_after
from service.api.openapi import Endpoint
from service.api.problems import json_response, problem_middleware
from service.api.schemas import WorkerCondition, worker_conditions_out
from service.db.migrate import head_revision, revision_on_engine
from service.db.repo import Repo
from service.jsoc.client import JsocClient
from service.jsoc.metadata import SeriesMeta
from service.jsoc.status import JsocError
from service.ops import jsoc_state
from service.ops.db_metrics import database_families, exposition
from service.ops.metrics import PREFIX
from service.settings import Settings
from service.version import package_version

log = logging.getLogger(__name__)
CHECK_TIMEOUT = 5.0
PROBE_AFTER_SECONDS = 60.0
PROBE_WAIT_SECONDS = 2.0
PROBE_TIMEOUT_SECONDS = 10.0
METRICS_PATH = "/metrics"
PROBE: web.AppKey[JsocProbe] = web.AppKey("jsoc_probe")  # JsocProbe is defined below
WITH_DB_METRICS = web.AppKey("metrics_with_db", bool)


class JsocReachability(BaseModel):
    state: Literal["up", "down", "unknown"] = Field(
        description="up: JSOC answered the last call; down: it did not (see since); "
        "unknown: not asked yet")
    since: str | None = Field(description="When the current state began (UTC)")
    last_ok_at: str | None = Field(description="Last time JSOC answered (UTC)")
    last_error: str | None = Field(description="What the last failed call got")


CONDITIONS_DOC = ("Worker-wide conditions live workers report (disk full), each naming its "
                  "worker; any makes the status degraded")


class Health(BaseModel):
    status: Literal["ok", "degraded"] = Field(
        description="ok: database reachable, JSOC not known down and no worker condition; "
        "else degraded")
    database: Literal["ok", "unavailable"]
    jsoc: JsocReachability
    conditions: list[WorkerCondition] = Field(default_factory=list,
                                              description=CONDITIONS_DOC)
    version: str
    auth: bool = Field(description="Whether requests need a bearer token")


class Readiness(BaseModel):
    status: Literal["ready", "degraded", "not_ready"] = Field(
        description="ready; degraded: JSOC unreachable or a worker condition such as disk "
        "full (jobs wait for it); not_ready (503): database unreachable or schema not current")
    database: Literal["ok", "unavailable"]
    migrations: Literal["current", "behind", "unknown"] = Field(
        description="Whether the schema is the newest (jsoc-bulk db upgrade)")
    schema_revision: str | None
    expected_revision: str
    jsoc: JsocReachability
    conditions: list[WorkerCondition] = Field(default_factory=list,
                                              description=CONDITIONS_DOC)
    version: str


class JsocProbe:
    """Asks JSOC when nothing else told us recently (see the module docstring). One probe at a
    time; ``ready`` waits for it at most PROBE_WAIT_SECONDS, so a hung JSOC does not make the
    readiness check time out (the probe goes on, and the next check sees its result)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.client: JsocClient | None = None
        self.task: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        if self.task is None or self.task.done():
            if not jsoc_state.needs_probe(self.base_url, PROBE_AFTER_SECONDS):
                return
            self.task = asyncio.create_task(self._probe(), name="jsoc-probe")
        with suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.task), PROBE_WAIT_SECONDS)

    async def _probe(self) -> None:
        self.client = self.client or JsocClient(self.base_url)
        try:
            await asyncio.wait_for(self.client.ping(), PROBE_TIMEOUT_SECONDS)
        except (JsocError, TimeoutError) as exc:
            reason = str(exc) or f"timeout: no answer in {PROBE_TIMEOUT_SECONDS:g} s"
            jsoc_state.record_unreachable(self.base_url, f"probe: {reason}", definitive=True)

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with suppress(asyncio.CancelledError):
                await self.task
        if self.client is not None:
            await self.client.close()


def _jsoc(c: ApiContext) -> JsocReachability:
    return JsocReachability(**jsoc_state.reachability(c.settings.jsoc_url).as_dict())


async def _conditions(c: ApiContext, check: str) -> list[WorkerCondition] | None:
    """The live workers' conditions; None when the database does not answer."""
    try:
        return worker_conditions_out(await asyncio.wait_for(
            c.repo.worker_conditions(stale_after=worker_stale_after(c.settings)),
            CHECK_TIMEOUT))
    except Exception as exc:
        log.warning("%s: the database is not reachable (%s)", check, type(exc).__name__)
        return None


async def health(request: web.Request) -> web.Response:
    """GET /health: liveness; 200 while the process answers, with the state of the database,
    of JSOC and of the workers (their conditions)."""
    c = request.app[CONTEXT]
    conditions = await _conditions(c, "health")
    jsoc = _jsoc(c)
    ok = conditions == [] and jsoc.state != "down"
    return json_response(Health(status="ok" if ok else "degraded",
                                database="unavailable" if conditions is None else "ok",
                                jsoc=jsoc, conditions=conditions or [], version=c.version,
                                auth=bool(c.settings.token_value)))


@functools.lru_cache(maxsize=1)
def _head() -> str:
    return head_revision()


async def _revision(c: ApiContext) -> tuple[bool, str | None]:
    try:
        return True, await asyncio.wait_for(revision_on_engine(c.repo.engine), CHECK_TIMEOUT)
    except Exception as exc:
        log.warning("ready: the database is not reachable (%s)", type(exc).__name__)
        return False, None


async def ready(request: web.Request) -> web.Response:
    """GET /ready: database reachable, schema current, JSOC reachable (or since when not)."""
    c = request.app[CONTEXT]
    await request.app[PROBE].refresh()
    db_ok, revision = await _revision(c)
    migrations: Literal["current", "behind", "unknown"]
    migrations = "unknown" if not db_ok else "current" if revision == _head() else "behind"
    conditions = await _conditions(c, "ready") if migrations == "current" else None
    jsoc = _jsoc(c)
    status: Literal["ready", "degraded", "not_ready"]
    status = ("not_ready" if migrations != "current" else
              "degraded" if jsoc.state == "down" or conditions else "ready")
    body = Readiness(status=status, database="ok" if db_ok else "unavailable",
                     migrations=migrations, schema_revision=revision, expected_revision=_head(),
                     jsoc=jsoc, conditions=conditions or [], version=c.version)
    return json_response(body, status=503 if status == "not_ready" else 200)


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics: Prometheus text format."""
    c = request.app[CONTEXT]
    families: list[Metric] = []
    up = GaugeMetricFamily(PREFIX + "database_up", "1 when the job-level metrics could be "
                           "read from the database at this scrape")
    if request.app[WITH_DB_METRICS]:
        try:
            families = await asyncio.wait_for(database_families(c.repo, c.settings),
                                              CHECK_TIMEOUT * 2)
            up.add_metric([], 1)
        except Exception as exc:
            log.warning("metrics: the database figures are unavailable (%s)",
                        type(exc).__name__)
            up.add_metric([], 0)
        families.append(up)
    return web.Response(body=exposition(families),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})


OPS_ENDPOINTS: list[Endpoint] = [
    Endpoint("GET", "/health", health, "health", "Liveness: the process answers (with the "
             "state of the database and of JSOC)", response=Health, public=True),
    Endpoint("GET", "/ready", ready, "ready", "Readiness: database reachable, schema current, "
             "JSOC reachable or since when not", response=Readiness, errors=(503,),
             public=True),
]


def public_paths(settings_metrics_public: bool) -> frozenset[str]:
    """Paths served without the token."""
    paths = {API_PREFIX + ep.path for ep in OPS_ENDPOINTS if ep.public}
    return frozenset(paths | ({METRICS_PATH} if settings_metrics_public else set()))


def add_ops_routes(app: web.Application, *, with_db_metrics: bool = True) -> None:
    """Register /metrics, health and ready, and the JSOC probe's lifetime, on ``app``."""
    app[WITH_DB_METRICS] = with_db_metrics
    for ep in OPS_ENDPOINTS:
        app.router.add_route(ep.method, API_PREFIX + ep.path, ep.handler, name=ep.operation_id)
    app.router.add_get(METRICS_PATH, metrics, name="metrics")

    async def probe_ctx(app: web.Application) -> AsyncIterator[None]:
        app[PROBE] = JsocProbe(app[CONTEXT].settings.jsoc_url)
        yield
        await app[PROBE].close()

    app.cleanup_ctx.append(probe_ctx)


async def _no_series(series: str) -> SeriesMeta:
    raise LookupError("this listener serves /metrics, health and ready only")


def ops_app(settings: Settings, repo: Repo) -> web.Application:
    """The listener of ``metrics_port``: this process's metrics, health and ready."""
    middlewares: list[Middleware] = [problem_middleware]
    if settings.token_value:
        paths = public_paths(settings.metrics_public)
        middlewares.append(make_auth_middleware(settings.token_value,
                                                public=lambda request: request.path in paths))
    app = web.Application(middlewares=middlewares)
    app[CONTEXT] = ApiContext(settings=settings, repo=repo, series_lookup=_no_series,
                              version=package_version())
    add_ops_routes(app, with_db_metrics=False)
    return app


async def serve_ops(settings: Settings, repo: Repo, stop: asyncio.Event) -> None:
    """Serve ``ops_app`` on settings.host:settings.metrics_port until ``stop`` is set."""
    assert settings.metrics_port is not None
    runner = web.AppRunner(ops_app(settings, repo))
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.host, settings.metrics_port).start()
        log.info("metrics, health and ready of this process on port %d",
                 runner.addresses[0][1])
        await stop.wait()
    finally:
        await runner.cleanup()
