"""Reading and checking a submitted job: JSON body, JobSpec model, the series' metadata."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from service.api.problems import ApiProblem, FieldError, summarize
from service.jobspec import JobSpec, SpecError
from service.jsoc.metadata import SeriesMeta
from service.jsoc.status import JsocError, StatusKind
from service.safetext import MAX_JSON_DEPTH, json_text_problems
from service.validation import check_against_series, format_errors

SeriesLookup = Callable[[str], Awaitable[SeriesMeta]]
JSON_TYPES = ("application/json",)
RETRY_AFTER_JSOC_DOWN = "60"


def _is_json_type(content_type: str) -> bool:
    return content_type in JSON_TYPES or content_type.endswith("+json")


async def read_json_object(request: web.Request, what: str) -> dict[str, Any]:
    """The request body as a JSON object; 415 for another content type, 400 for bad JSON."""
    if not _is_json_type(request.content_type):
        got = request.headers.get("Content-Type") or "none"
        raise ApiProblem(415, "unsupported-media-type", "Unsupported Media Type",
                         f"the {what} must be sent as JSON with 'Content-Type: application/json'"
                         f"; got Content-Type {got}")
    raw = await request.read()
    if not raw.strip():
        raise ApiProblem(400, "malformed-json", "Malformed JSON",
                         f"the request body is empty; send the {what} as a JSON object")
    data = _parse_json(raw)
    if not isinstance(data, dict):
        raise ApiProblem(400, "malformed-json", "Malformed JSON",
                         f"the {what} must be a JSON object; got a JSON {type(data).__name__}")
    problems = json_text_problems(data)
    if problems:
        raise ApiProblem(400, "invalid-text", "Invalid text or number in the body",
                         f"the {what} has values the service cannot store: "
                         f"{summarize([FieldError(field='', message=p) for p in problems])}; "
                         "strings must be UTF-8 text without NUL, numbers finite",
                         [FieldError(field=p.split(':', 1)[0], message=p) for p in problems])
    return data


def _parse_json(raw: bytes) -> Any:
    """JSON text -> data; 400 for text that is not UTF-8 JSON or nests too deeply."""
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise ApiProblem(400, "malformed-json", "Malformed JSON",
                         "the request body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ApiProblem(400, "malformed-json", "Malformed JSON",
                         f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} "
                         f"column {exc.colno}") from None
    except RecursionError:
        raise ApiProblem(400, "malformed-json", "Malformed JSON",
                         f"the request body nests too deeply; at most {MAX_JSON_DEPTH} levels "
                         "are accepted") from None


def spec_field_errors(exc: ValidationError) -> list[FieldError]:
    """Per-field messages, worded by service.validation (what is wrong and what is accepted)."""
    messages = format_errors(exc)
    return [FieldError(field=".".join(str(p) for p in err["loc"]), message=message)
            for err, message in zip(exc.errors(include_url=False), messages, strict=True)]


def parse_spec(data: dict[str, Any]) -> JobSpec:
    """JobSpec from the body; 422 with one entry per problem."""
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        errors = spec_field_errors(exc)
        raise ApiProblem(422, "invalid-job-spec", "Invalid job spec",
                         f"invalid job spec: {summarize(errors)}", errors) from None


def _spec_problem(problems: list[str]) -> ApiProblem:
    errors = [FieldError(field="", message=p) for p in problems]
    return ApiProblem(422, "invalid-job-spec", "Invalid job spec",
                      f"the job spec does not fit the series: {summarize(errors)}", errors)


async def check_against_jsoc(spec: JobSpec, lookup: SeriesLookup) -> SeriesMeta:
    """Fetch the series' metadata and check the spec against it (422 / 503 problems)."""
    series = spec.series_name
    try:
        meta = await lookup(series)
    except JsocError as exc:
        if exc.kind is StatusKind.TRANSIENT:
            raise ApiProblem(
                503, "jsoc-unavailable", "JSOC unavailable",
                f"cannot check the job against JSOC's metadata for {series}: {exc.message}; "
                "try again later", headers={"Retry-After": RETRY_AFTER_JSOC_DOWN}) from None
        raise ApiProblem(
            422, "unknown-series", "Unknown series",
            f"series {series!r} is not known to JSOC: {exc.message}",
            [FieldError(field="series" if spec.series else "recordset", message=exc.message)],
        ) from None
    try:
        check_against_series(spec, meta)
    except SpecError as exc:
        raise _spec_problem(exc.problems) from None
    except ValueError as exc:  # a path template that cannot be rendered
        raise _spec_problem([str(exc)]) from None
    return meta
