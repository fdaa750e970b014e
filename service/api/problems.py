"""RFC 9457 problem documents: the one error format of the REST API."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError

log = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_PREFIX = "urn:jsoc-bulk:problem:"
MAX_ERRORS_IN_DETAIL = 5


class FieldError(BaseModel):
    """One per-field message: ``field`` is a dotted path ("spec.segments.0"), or "" for the body."""

    field: str
    message: str


class ProblemDocument(BaseModel):
    """The JSON body of every error response (RFC 9457 plus an ``errors`` extension)."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[FieldError] = []


class ApiProblem(Exception):
    """Raised by handlers; the error middleware turns it into a problem document."""

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str,
        errors: Iterable[FieldError] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.errors = list(errors)
        self.headers = headers or {}

    def document(self, instance: str | None = None) -> ProblemDocument:
        return ProblemDocument(
            type=PROBLEM_TYPE_PREFIX + self.slug,
            title=self.title,
            status=self.status,
            detail=self.detail,
            instance=instance,
            errors=self.errors,
        )


def field_errors_from_validation(exc: ValidationError, prefix: str = "") -> list[FieldError]:
    """Flatten a pydantic ValidationError into per-field messages."""
    errors = []
    for err in exc.errors(include_url=False):
        path = ".".join(str(part) for part in err["loc"])
        field = f"{prefix}.{path}" if prefix and path else (prefix or path)
        message = str(err["msg"])
        if isinstance(err.get("input"), str | int | float) and err["type"] != "missing":
            message += f"; got {err['input']!r}"
        errors.append(FieldError(field=field, message=message))
    return errors


def summarize(errors: list[FieldError]) -> str:
    """One readable line from per-field messages (the first few, with a count of the rest)."""
    parts = [f"{e.field}: {e.message}" if e.field and not e.message.startswith(e.field)
             else e.message for e in errors]
    shown = "; ".join(parts[:MAX_ERRORS_IN_DETAIL])
    rest = len(parts) - MAX_ERRORS_IN_DETAIL
    return shown + (f" (and {rest} more)" if rest > 0 else "")


def validation_problem(
    exc: ValidationError, what: str, prefix: str = "", status: int = 422
) -> ApiProblem:
    """A 422 (or given status) problem for a pydantic validation failure of ``what``."""
    errors = field_errors_from_validation(exc, prefix)
    return ApiProblem(
        status, "validation-error", f"Invalid {what}", f"Invalid {what}: {summarize(errors)}",
        errors,
    )


def problem_response(problem: ApiProblem, instance: str | None = None) -> web.Response:
    body = problem.document(instance).model_dump(exclude_none=True)
    return web.Response(
        status=problem.status,
        text=json.dumps(body),
        content_type=PROBLEM_CONTENT_TYPE,
        headers=problem.headers,
    )


def _from_http_exception(exc: web.HTTPException, request: web.Request) -> ApiProblem:
    """Map aiohttp's own errors (unknown route, wrong method, body too large …) to problems."""
    if exc.status == 404:
        detail = f"No such endpoint: {request.method} {request.path} (see /api/v1/openapi.json)"
    elif exc.status == 405:
        allowed = ", ".join(sorted(getattr(exc, "allowed_methods", ()) or ()))
        detail = f"Method {request.method} is not allowed on {request.path}; allowed: {allowed}"
    elif exc.status == 413:
        detail = "Request body is too large"
    else:
        detail = exc.text or exc.reason
    headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
    return ApiProblem(exc.status, f"http-{exc.status}", exc.reason, detail, headers=headers)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into an ``application/problem+json`` response; never a traceback."""
    try:
        return await handler(request)
    except ApiProblem as problem:
        return problem_response(problem, request.path)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return problem_response(_from_http_exception(exc, request), request.path)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        internal = ApiProblem(500, "internal-error", "Internal Server Error",
                              "The server failed to handle the request; see the server log")
        return problem_response(internal, request.path)


def json_text(data: Any) -> str:
    """JSON of a pydantic model or plain data. Text that is not UTF-8 (a lone surrogate
    stored before input was checked) is sent escaped rather than failing."""
    if isinstance(data, BaseModel):
        try:
            return data.model_dump_json()
        except PydanticSerializationError:
            return json.dumps(data.model_dump(mode="json"))
    return json.dumps(data)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None,
                  ) -> web.Response:
    """A JSON response from a pydantic model or plain data (``json_text``)."""
    return web.json_response(text=json_text(data), status=status, headers=headers)
