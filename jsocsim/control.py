"""/_sim/* control endpoints: stats, manifest, faults, config, clock, reset (all JSON)."""

from __future__ import annotations

import inspect
import json
from typing import Any

from aiohttp import web

from jsocsim.config import runtime_view, update_runtime
from jsocsim.state import SimState, get_state
from jsocsim.timeslots import parse_time


def manifest_of(state: SimState) -> dict[str, Any]:
    """FileStore.manifest(): {url path: {"size": int, "sha256": str}}."""
    return dict(state.store.manifest())


def bad_request(message: str) -> web.Response:
    """HTTP 400 with {"error": message}."""
    return web.json_response({"error": message}, status=400)


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object; an empty body is {}. Raises ValueError otherwise."""
    text = await request.text()
    if not text.strip():
        return {}
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    return body


async def handle_stats(request: web.Request) -> web.Response:
    """GET /_sim/stats: per client, email, export and file counters."""
    return web.json_response(get_state(request).stats.snapshot())


async def handle_manifest(request: web.Request) -> web.Response:
    """GET /_sim/manifest: every generated or exported file with size and sha256."""
    state = get_state(request)
    manifest = state.store.manifest()
    if inspect.isawaitable(manifest):
        manifest = await manifest
    return web.json_response(dict(manifest))


async def handle_faults(request: web.Request) -> web.Response:
    """GET shows, POST changes fault settings (FaultConfig field names as JSON keys)."""
    state = get_state(request)
    if request.method == "POST":
        try:
            state.faults.update(**await read_json_object(request))
        except (ValueError, TypeError) as exc:
            return bad_request(str(exc))
    return web.json_response(state.faults.summary())


async def handle_config(request: web.Request) -> web.Response:
    """GET shows, POST changes the run-time options (latency, bandwidth, staging_*, tape_delay).

    Staging changes apply to exports requested afterwards.
    """
    state = get_state(request)
    if request.method == "POST":
        try:
            return web.json_response(update_runtime(state.config,
                                                    **await read_json_object(request)))
        except (ValueError, TypeError) as exc:
            return bad_request(str(exc))
    return web.json_response(runtime_view(state.config))


async def handle_clock(request: web.Request) -> web.Response:
    """POST {"advance": seconds} or {"now": "<JSOC/ISO time>"}; GET shows the clock."""
    state = get_state(request)
    if request.method == "POST":
        try:
            body = await read_json_object(request)
            if set(body) - {"advance", "now"} or len(body) != 1:
                raise ValueError('send exactly one of {"advance": seconds} or {"now": "<time>"}')
            if "advance" in body:
                state.clock.advance(float(body["advance"]))
            else:
                state.clock.set(float(parse_time(str(body["now"]))))
        except (ValueError, TypeError) as exc:
            return bad_request(str(exc))
    return web.json_response(clock_view(state))


def clock_view(state: SimState) -> dict[str, Any]:
    """The simulated time as TAI seconds and as UTC ISO text."""
    return {"tai": state.clock(), "utc": state.clock.utc_datetime().isoformat()}


async def handle_reset(request: web.Request) -> web.Response:
    """POST /_sim/reset: zero the stats."""
    state = get_state(request)
    state.stats.reset()
    return web.json_response({"reset": True})


def add_routes(app: web.Application) -> None:
    """Register the /_sim/* routes on `app`."""
    app.router.add_get("/_sim/stats", handle_stats)
    app.router.add_get("/_sim/manifest", handle_manifest)
    app.router.add_get("/_sim/faults", handle_faults)
    app.router.add_post("/_sim/faults", handle_faults)
    app.router.add_get("/_sim/config", handle_config)
    app.router.add_post("/_sim/config", handle_config)
    app.router.add_get("/_sim/clock", handle_clock)
    app.router.add_post("/_sim/clock", handle_clock)
    app.router.add_post("/_sim/reset", handle_reset)
