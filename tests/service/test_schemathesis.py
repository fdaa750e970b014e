"""Schemathesis against the served openapi.json, on SQLite and Postgres: a bounded run
(positive and negative cases for every operation, a few hundred in all, fixed seed) against the
real aiohttp app on a loopback port, validating jobs against the emulator; no case may get a
server error (5xx other than the documented 503 of an unavailable dependency)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.service.api_harness import served_api

CASES_PER_OPERATION_AND_MODE = 20  # 11 operations, 1 or 2 modes: about 260 cases per database


async def test_no_server_errors_on_generated_requests(db_url: str, tmp_path: Path) -> None:
    async with served_api(db_url, tmp_path) as api:  # served by this loop; called from a thread
        calls = await asyncio.to_thread(run_schemathesis, api.base_url.rstrip("/"))
    statuses = [status for _label, status in calls]
    assert len(calls) >= 200, len(calls)
    assert not [c for c in calls if c[1] >= 500 and c[1] != 503], calls
    assert any(s in (200, 202) for s in statuses) and any(400 <= s < 500 for s in statuses)


def run_schemathesis(url: str) -> list[tuple[str, int]]:
    """Every operation of the served document, positive and negative cases; returns the
    (operation, status) of every call (a server error fails at once)."""
    calls: list[tuple[str, int]] = []
    with requests.Session() as session:
        doc = session.get(f"{url}/api/v1/openapi.json", timeout=10).json()
        schema = schemathesis.openapi.from_dict(doc)
        for result in schema.get_all_operations():
            operation = result.ok()
            raw = doc["paths"][operation.path][operation.method.lower()]
            # negative cases need an input that can be wrong: a body, a query or a header
            # (a path segment is always a string, as the schema says)
            has_input = "requestBody" in raw or any(p["in"] != "path"
                                                    for p in raw.get("parameters", []))
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)[:1 + has_input]:
                run_operation(operation, mode, url, session, calls)
    return calls


def run_operation(operation: Any, mode: Any, url: str, session: requests.Session,
                  calls: list[tuple[str, int]]) -> None:
    """Up to CASES_PER_OPERATION_AND_MODE generated calls; each response checked."""
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=CASES_PER_OPERATION_AND_MODE, deadline=None, derandomize=True,
              database=None, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    def check(case: Any) -> None:
        response = case.call(base_url=url, session=session, timeout=30)
        calls.append((operation.label, response.status_code))
        case.validate_response(response, checks=[not_a_server_error])

    check()
