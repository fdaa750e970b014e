"""The dashboard: a static page at ``/`` and its assets under ``/dashboard/``, shipped in the
package (``service/dashboard/``: plain HTML, CSS and ES modules; no build step, no CDN).

The page and its assets load without the token (they hold no data); everything they show comes
from ``/api/v1``, which the page calls with ``Authorization: Bearer`` when a token is set.
Assets are read once at start-up and served from memory by name, so no request path ever
reaches the file system.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from service.api.problems import ApiProblem

ASSET_PREFIX = "/dashboard/"
CONTENT_TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript",
                 ".svg": "image/svg+xml"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
Assets = dict[str, tuple[bytes, str]]
ASSETS = web.AppKey("dashboard_assets", dict)


def load_assets() -> Assets:
    """Every asset of ``service/dashboard`` by file name: (content, content type)."""
    folder = resources.files("service") / "dashboard"
    assets: Assets = {}
    for item in folder.iterdir():
        suffix = "." + item.name.rpartition(".")[2]
        if item.is_file() and suffix in CONTENT_TYPES:
            assets[item.name] = (item.read_bytes(), CONTENT_TYPES[suffix])
    return assets


def is_public(request: web.Request) -> bool:
    """The page and its assets need no token (the API calls they make do)."""
    return request.method in ("GET", "HEAD") and (
        request.path == "/" or request.path.startswith(ASSET_PREFIX))


def _asset(request: web.Request, name: str) -> web.Response:
    found = request.app[ASSETS].get(name)
    if found is None:
        raise ApiProblem(404, "not-found", "Not Found",
                         f"No dashboard asset named {name!r}; the dashboard is at /")
    body, content_type = found
    return web.Response(body=body, content_type=content_type, charset="utf-8",
                        headers=SECURITY_HEADERS)


async def page(request: web.Request) -> web.Response:
    """GET /: the dashboard's page."""
    return _asset(request, "index.html")


async def asset(request: web.Request) -> web.Response:
    """GET /dashboard/{name}: a script, style sheet or icon of the page."""
    return _asset(request, request.match_info["name"])


def add_dashboard(app: web.Application) -> None:
    """Serve the dashboard from ``app`` (at ``/`` and ``/dashboard/{name}``)."""
    app[ASSETS] = load_assets()
    app.router.add_get("/", page, name="dashboard")
    app.router.add_get(ASSET_PREFIX + "{name}", asset, name="dashboardAsset")
