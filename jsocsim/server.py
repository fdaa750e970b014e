"""aiohttp app factory, the `Emulator` (start/stop) and `run_emulator()` for tests."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from jsocsim import cgi_info, control, files
from jsocsim.catalog import Catalog
from jsocsim.cgi_fetch import handle_jsoc_fetch
from jsocsim.config import EmulatorConfig, make_config, update_runtime
from jsocsim.exports import ExportManager
from jsocsim.faults import Faults
from jsocsim.records import RecordEngine
from jsocsim.state import STATE_KEY, SimClock, SimState, client_ip, get_state
from jsocsim.stats import Stats
from jsocsim.store import FileStore

log = logging.getLogger(__name__)
CGI_PREFIX = "/cgi-bin/ajax/"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build_state(config: EmulatorConfig) -> SimState:
    """Wire catalog, record engine, file store, exports, stats, faults and clock together."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    clock = SimClock(config.clock_start)
    catalog = Catalog.load()
    engine = RecordEngine(catalog, config.records, clock)
    state = SimState(config=config, catalog=catalog, engine=engine,
                     store=FileStore(config, engine), stats=Stats(),
                     faults=Faults(config.faults, clock, config.records), clock=clock)
    if config.faults.offline_rate > 0:
        state.faults.apply_offline_rate()
    state.exports = ExportManager(state)  # it reads the rest of the state
    return state


def plain_error(status: int, text: str, retry_after: float | None = None) -> web.Response:
    """A short text error response, optionally with Retry-After (whole seconds)."""
    headers = {"Retry-After": str(max(1, math.ceil(retry_after)))} if retry_after else None
    return web.Response(status=status, text=text + "\n", headers=headers)


@web.middleware
async def latency_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Holds every CGI and file response `config.latency` seconds (a network round trip).

    The wait comes before anything else (outages, refusals, 206 and 416 answers included);
    /_sim/* control calls are not delayed. asyncio.sleep: other requests proceed meanwhile.
    """
    latency = get_state(request).config.latency
    if latency > 0 and not request.path.startswith("/_sim/"):
        await asyncio.sleep(latency)
    return await handler(request)


@web.middleware
async def fault_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Counts CGI calls and applies outages, slow responses and CGI 500s."""
    if request.path.startswith("/_sim/"):
        return await handler(request)
    state = get_state(request)
    is_cgi = request.path.startswith("/cgi-bin/")
    endpoint = request.path.rsplit("/", 1)[-1]
    if is_cgi:
        state.stats.cgi_request(client_ip(request), endpoint)
    if state.faults.in_outage():
        status = 500 if is_cgi else 503
        return plain_error(status, "JSOC is unavailable (simulated outage)",
                           state.faults.outage_remaining())
    if state.faults.roll("slow", request.path):
        await asyncio.sleep(state.faults.config.slow_seconds)
    if is_cgi and state.faults.roll("cgi_error", endpoint):
        return plain_error(500, "Internal Server Error (simulated)")
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as exc:
        if not is_cgi:
            raise
        log.exception("error in %s", request.path)
        return web.json_response({"status": 1, "error": f"internal emulator error: {exc}"},
                                 status=500)


def create_app(state: SimState) -> web.Application:
    """The emulator's aiohttp application for `state`."""
    app = web.Application(middlewares=[latency_middleware, fault_middleware])
    app[STATE_KEY] = state
    cgis: dict[str, Handler] = {
        "show_series": cgi_info.handle_show_series,
        "showextseries": cgi_info.handle_showextseries,
        "jsoc_info": cgi_info.handle_jsoc_info,
        "checkAddress.sh": cgi_info.handle_check_address,
        "jsoc_fetch": handle_jsoc_fetch,
    }
    for name, handler in cgis.items():
        app.router.add_route("GET", CGI_PREFIX + name, handler)
        app.router.add_route("POST", CGI_PREFIX + name, handler)
    control.add_routes(app)
    app.router.add_get(r"/{sums:SUM\d+}/{rest:.+}", files.handle_file)
    app.on_cleanup.append(_close_exports)
    return app


async def _close_exports(app: web.Application) -> None:
    await app[STATE_KEY].exports.close()


class Emulator:
    """One emulator server; `await start()` returns the base URL, `await stop()` ends it."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.state = build_state(config)
        self.app = create_app(self.state)
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def start(self) -> str:
        """Bind host:port (0 = any free port) and serve; returns "http://HOST:PORT/"."""
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}/"
        return self.base_url

    async def stop(self) -> None:
        """Stop serving and release the port."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def stats(self) -> dict[str, Any]:
        """The stats dict (same as GET /_sim/stats)."""
        return self.state.stats.snapshot()

    def set_faults(self, **changes: Any) -> dict[str, Any]:
        """Change fault settings (same as POST /_sim/faults); returns the new configuration."""
        return self.state.faults.update(**changes).as_dict()

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change latency, bandwidth or staging options while running (same as POST
        /_sim/config); returns the current values of every run-time option."""
        return update_runtime(self.config, **changes)

    def advance_clock(self, seconds: float) -> float:
        """Move the simulated clock forward; returns the new TAI seconds."""
        return self.state.clock.advance(seconds)

    def manifest(self) -> dict[str, Any]:
        """Every staged/served file: {url path: {"size", "sha256"}}."""
        return control.manifest_of(self.state)

    def reset_stats(self) -> None:
        """Zero the stats (same as POST /_sim/reset)."""
        self.state.stats.reset()


@asynccontextmanager
async def run_emulator(data_dir: str | Path, emails: list[str] | tuple[str, ...] = (),
                       **options: Any) -> AsyncIterator[Emulator]:
    """Run an emulator in-process (port 0 unless given) and yield it (use `.base_url`)."""
    config = make_config(data_dir=Path(data_dir), emails=list(emails), **options)
    emulator = Emulator(config)
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()
