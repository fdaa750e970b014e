"""Checks at the API's edge: query and path text the database can store, and the database's
own unavailability answered as 503 rather than 500."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import exc as sa_exc

from service.api.problems import ApiProblem, FieldError, Handler
from service.safetext import name_problem

RETRY_AFTER_DATABASE_DOWN = "5"
_DOWN = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError,
         sa_exc.TimeoutError, ConnectionError, TimeoutError)


def database_unavailable(exc: BaseException) -> bool:
    """True for failures that mean the database cannot be reached or used right now
    (refused or lost connections, a locked or unopenable SQLite file, a full pool)."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, sa_exc.DBAPIError) and isinstance(exc.orig, _DOWN):
        return True
    cause = exc.__cause__
    return isinstance(exc, _DOWN) or (cause is not None and isinstance(cause, _DOWN))


def database_problem(exc: BaseException) -> ApiProblem:
    return ApiProblem(503, "database-unavailable", "Database unavailable",
                      f"the database cannot be reached right now ({type(exc).__name__}); "
                      "try again later", headers={"Retry-After": RETRY_AFTER_DATABASE_DOWN})


def _text_errors(request: web.Request) -> list[FieldError]:
    errors = []
    for name, value in request.match_info.items():
        problem = name_problem(value)
        if problem:
            errors.append(FieldError(field=name, message=f"path parameter {name} {problem}"))
    for name, value in request.query.items():
        problem = name_problem(name) or name_problem(value)
        if problem:
            errors.append(FieldError(field=name, message=f"query parameter {name!r} {problem}"))
    return errors


@web.middleware
async def input_text_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """400 for a path or query parameter with a NUL, a control character or text that is not
    UTF-8; 503 when the database is unavailable."""
    errors = _text_errors(request)
    if errors:
        raise ApiProblem(400, "invalid-text", "Invalid text in the request",
                         "; ".join(e.message for e in errors) +
                         "; parameters must be printable UTF-8 text", errors)
    try:
        return await handler(request)
    except Exception as exc:
        if database_unavailable(exc):
            raise database_problem(exc) from None
        raise
