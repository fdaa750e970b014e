"""The OpenAPI 3.1 document, built from the endpoint table and the pydantic models it names."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from service.api.problems import PROBLEM_CONTENT_TYPE, Handler, ProblemDocument

REF_TEMPLATE = "#/components/schemas/{model}"


@dataclass(frozen=True)
class HeaderParam:
    name: str
    description: str
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})


@dataclass(frozen=True)
class Endpoint:
    """One route: the app registers ``handler`` and the spec describes it from the same entry."""

    method: Literal["GET", "POST", "DELETE"]
    path: str  # under the API prefix, e.g. "/jobs/{job_id}"
    handler: Handler
    operation_id: str
    summary: str
    ok_status: int = 200
    response: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    headers: Sequence[HeaderParam] = ()
    errors: Sequence[int] = ()
    extra_ok: dict[int, str] = field(default_factory=dict)  # other success codes, same body
    public: bool = False  # answered without the token (health and readiness probes)


def _collect_schemas(endpoints: Sequence[Endpoint]) -> tuple[dict[Any, Any], dict[str, Any]]:
    pairs: list[tuple[type[BaseModel], JsonSchemaMode]] = [(ProblemDocument, "serialization")]
    for ep in endpoints:
        if ep.body is not None:
            pairs.append((ep.body, "validation"))
        if ep.response is not None:
            pairs.append((ep.response, "serialization"))
    unique = list(dict.fromkeys(pairs))
    refs, defs = models_json_schema(unique, ref_template=REF_TEMPLATE)
    return refs, defs.get("$defs", {})


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=REF_TEMPLATE)
    required = set(schema.get("required", []))
    params = []
    for name, prop in schema.get("properties", {}).items():
        schema_ = {k: v for k, v in prop.items() if k not in ("description", "anyOf")}
        # "absent" is how a query string says null: document the non-null alternative only
        options = [o for o in prop.get("anyOf", []) if o != {"type": "null"}]
        if len(options) == 1:
            schema_.update(options[0])
        elif options:
            schema_["anyOf"] = options
        if options and schema_.get("default", "") is None:
            del schema_["default"]
        param: dict[str, Any] = {"name": name, "in": "query", "required": name in required,
                                 "schema": schema_}
        if "description" in prop:
            param["description"] = prop["description"]
        params.append(param)
    return params


def _path_parameters(path: str) -> list[dict[str, Any]]:
    names = [part[1:-1] for part in path.split("/") if part.startswith("{")]
    return [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
            for n in names]


def _problem_response(status: int) -> dict[str, Any]:
    return {
        "description": HTTPStatus(status).phrase,
        "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": REF_TEMPLATE.format(
            model="ProblemDocument")}}},
    }


def _operation(ep: Endpoint, refs: dict[Any, Any], auth: bool) -> dict[str, Any]:
    params = _path_parameters(ep.path)
    if ep.query is not None:
        params += _query_parameters(ep.query)
    params += [{"name": h.name, "in": "header", "required": False, "description": h.description,
                "schema": h.schema} for h in ep.headers]
    ok: dict[str, Any] = {"description": HTTPStatus(ep.ok_status).phrase}
    if ep.response is not None:
        schema = refs[(ep.response, "serialization")]
        ok["content"] = {"application/json": {"schema": schema}}
    responses: dict[str, Any] = {str(ep.ok_status): ok}
    for status, description in ep.extra_ok.items():
        responses[str(status)] = {**ok, "description": description}
    # every route reads the database (503 while it is down); parameters may carry bad text
    error_codes = set(ep.errors) | ({401} if auth and not ep.public else set()) | {500, 503}
    if params:
        error_codes |= {400}
    if ep.body is not None:
        error_codes |= {400, 415, 422}
    for status in sorted(error_codes):
        responses[str(status)] = _problem_response(status)
    op: dict[str, Any] = {"operationId": ep.operation_id, "summary": ep.summary,
                          "responses": responses}
    if params:
        op["parameters"] = params
    if auth and ep.public:
        op["security"] = []  # no token needed
    if ep.body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": refs[(ep.body, "validation")]}}}
    return op


def build_openapi(endpoints: Sequence[Endpoint], prefix: str, *, auth: bool,
                  version: str = "0.1.0") -> dict[str, Any]:
    """The complete OpenAPI document for ``endpoints`` mounted under ``prefix``."""
    refs, schemas = _collect_schemas(endpoints)
    paths: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        paths.setdefault(prefix + ep.path, {})[ep.method.lower()] = _operation(ep, refs, auth)
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "jsoc-bulk", "version": version,
                 "description": "Bulk, resumable, polite downloads from JSOC."},
        "paths": paths,
        "components": {"schemas": schemas},
    }
    if auth:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        doc["security"] = [{"bearer": []}]
    return doc
