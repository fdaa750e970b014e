"""Bearer-token authentication: every request needs the token when one is configured."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from service.api.problems import ApiProblem, Handler

BEARER_PREFIX = "bearer "


def _presented_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header[: len(BEARER_PREFIX)].lower() != BEARER_PREFIX:
        return None
    return header[len(BEARER_PREFIX):].strip()


def token_matches(presented: str, expected: str) -> bool:
    """Constant-time comparison (the token itself is never logged or echoed)."""
    return hmac.compare_digest(presented.encode(), expected.encode())


def make_auth_middleware(token: str, public: Callable[[web.Request], bool] | None = None,
                         ) -> Middleware:
    """Middleware refusing requests without ``Authorization: Bearer <token>`` (401), except
    those ``public`` accepts (pages that hold no data)."""

    @web.middleware
    async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if public is not None and public(request):
            return await handler(request)
        presented = _presented_token(request)
        if presented is None:
            raise ApiProblem(
                401, "unauthorized", "Unauthorized",
                "This server requires a token: send 'Authorization: Bearer <token>' "
                "(jsoc-bulk: --token or JSOC_BULK_TOKEN)",
                headers={"WWW-Authenticate": 'Bearer realm="jsoc-bulk"'},
            )
        if not token_matches(presented, token):
            raise ApiProblem(
                401, "unauthorized", "Unauthorized", "The bearer token is not valid",
                headers={"WWW-Authenticate": 'Bearer realm="jsoc-bulk", error="invalid_token"'},
            )
        return await handler(request)

    return auth_middleware
