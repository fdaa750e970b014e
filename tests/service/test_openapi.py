"""The OpenAPI document matches the app: same routes, and schemas taken from the models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from service.api.app import create_app
from service.api.handlers import API_PREFIX, CONTEXT, ENDPOINTS
from service.api.openapi import REF_TEMPLATE
from service.api.ops import METRICS_PATH, OPS_ENDPOINTS
from service.api.overview import OVERVIEW_ENDPOINTS, ExportListQuery
from service.api.schemas import DeleteQuery, FileListQuery, JobListQuery
from service.jobspec import JobSpec
from service.settings import Settings
from tests.service.api_harness import served_api

METHODS = {"get", "post", "put", "delete", "patch"}
PAGE_ROUTES = {("get", "/"), ("get", "/dashboard/{name}")}


@pytest.fixture
def app(tmp_path: Path) -> web.Application:
    settings = Settings(data_dir=tmp_path, email="a@example.org")
    return create_app(settings, repo=None, series_lookup=None)  # type: ignore[arg-type]


@pytest.fixture
def spec(app: web.Application) -> dict[str, Any]:
    return app[CONTEXT].openapi


def app_routes(app: web.Application) -> set[tuple[str, str]]:
    return {(route.method.lower(), route.resource.canonical)  # type: ignore[union-attr]
            for route in app.router.routes() if route.method != "HEAD"}


def spec_routes(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method, path) for path, ops in spec["paths"].items()
            for method in ops if method in METHODS}


def refs(node: Any) -> Iterator[str]:
    """Every $ref in a JSON document."""
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


@pytest.mark.unit
def test_every_route_is_documented_and_every_documented_route_exists(
        app: web.Application, spec: dict[str, Any]) -> None:
    every_route = app_routes(app)
    routes = {(method, path) for method, path in every_route if path.startswith(API_PREFIX)}
    # the dashboard's page and assets, and Prometheus text (documented in the README)
    assert every_route - routes == PAGE_ROUTES | {("get", METRICS_PATH)}
    assert routes == spec_routes(spec)
    assert len(routes) == len(ENDPOINTS) + len(OVERVIEW_ENDPOINTS) + len(OPS_ENDPOINTS)
    for path, ops in spec["paths"].items():
        names = {part[1:-1] for part in path.split("/") if part.startswith("{")}
        for op in ops.values():
            documented = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert documented == names, (path, documented)


@pytest.mark.unit
def test_jobspec_schema_is_the_models(spec: dict[str, Any]) -> None:
    model = JobSpec.model_json_schema(ref_template=REF_TEMPLATE, mode="validation")
    nested = model.pop("$defs", {})
    schemas = spec["components"]["schemas"]
    assert schemas["JobSpec"] == model
    for name, schema in nested.items():
        assert schemas[name] == schema
    body = spec["paths"][f"{API_PREFIX}/jobs"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"] == {"$ref": REF_TEMPLATE.format(
        model="JobSpec")}
    assert set(schemas["JobSpec"]["properties"]) == set(JobSpec.model_fields)


@pytest.mark.unit
@pytest.mark.parametrize(("path", "model"), [
    ("/jobs", JobListQuery), ("/jobs/{job_id}/files", FileListQuery),
    ("/jobs/{job_id}/exports", ExportListQuery),
])
def test_query_parameters_are_the_query_models(spec: dict[str, Any], path: str,
                                               model: type) -> None:
    params = spec["paths"][API_PREFIX + path]["get"]["parameters"]
    assert {p["name"] for p in params if p["in"] == "query"} == set(model.model_fields)


@pytest.mark.unit
def test_delete_documents_delete_files(spec: dict[str, Any]) -> None:
    params = spec["paths"][f"{API_PREFIX}/jobs/{{job_id}}"]["delete"]["parameters"]
    assert {p["name"] for p in params if p["in"] == "query"} == set(DeleteQuery.model_fields)


@pytest.mark.unit
def test_every_ref_resolves_and_errors_are_problem_documents(spec: dict[str, Any]) -> None:
    components = spec["components"]["schemas"]
    for ref in refs(spec):
        assert ref.startswith("#/components/schemas/")
        assert ref.removeprefix("#/components/schemas/") in components, ref
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            errors = {int(code): r for code, r in op["responses"].items() if int(code) >= 400}
            assert 500 in errors, (method, path)
            for response in errors.values():
                assert "application/problem+json" in response["content"]
    post = spec["paths"][f"{API_PREFIX}/jobs"]["post"]
    assert {"202", "200", "400", "415", "422"} <= set(post["responses"])
    assert any(p["name"] == "Idempotency-Key" for p in post["parameters"])
    action = spec["paths"][f"{API_PREFIX}/jobs/{{job_id}}/resume"]["post"]
    assert {"404", "409"} <= set(action["responses"])


async def test_served_document_is_the_built_one(tmp_path: Path) -> None:
    async with served_api(f"sqlite+aiosqlite:///{tmp_path}/unused.db", tmp_path) as api:
        reply = await api.call("GET", "openapi.json")
        app = create_app(api.settings, api.repo)
    assert reply.status == 200
    assert reply.body == app[CONTEXT].openapi
    assert reply.body["openapi"].startswith("3.1")
