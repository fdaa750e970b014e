"""Hostile input at the API's edge, on SQLite and Postgres: text the database cannot store,
numbers out of its range, JSON nested too deeply, specs that would only fail later, and the
database itself away — each a clear 4xx or 503 problem, never a 500, and nothing stored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema_rs
import pytest
from aiohttp import web

from service.api.app import running_api
from service.api.handlers import API_PREFIX, ENDPOINTS
from service.api.openapi import build_openapi
from service.db.repo import Repo
from service.settings import Settings
from tests.e2e.procs import free_port
from tests.service.api_harness import EMAIL, SPEC, Api, assert_problem, served_api
from tests.service.cli_harness import assert_one_line_error, jsoc_bulk
from tests.service.stub_server import serving

JSON = {"Content-Type": "application/json"}
EMPTY_LISTING = {"items": [], "limit": 50, "offset": 0, "next_offset": None}


async def post_raw(api: Api, text: str) -> Any:
    return await api.call("POST", "jobs", data=text.encode("utf-8", "surrogatepass"),
                          headers=JSON)


async def check_unstorable_text_is_refused(api: Api) -> None:
    """NUL and lone surrogates anywhere in a body: 400 naming the field, nothing stored."""
    bodies = {
        "where.0.value": {**SPEC, "where": [{"keyword": "QUALITY", "op": "=",
                                             "value": "0\u0000"}]},
        "path_template": {**SPEC, "path_template": "{series}/\ud800/{filename}"},
        "where.0": {**SPEC, "where": ["QUALITY = \ud800"]},
        "recordset": {"recordset": "hmi.M_720s[2014.01.01_TAI/1h]\u0000"},
    }
    for field, body in bodies.items():
        reply = await post_raw(api, json.dumps(body))
        assert_problem(reply, 400, field, "UTF-8 text without NUL")
        assert reply.body["errors"][0]["field"] == field
    listing = await api.call("GET", "jobs")
    assert listing.status == 200 and listing.body == EMPTY_LISTING


async def check_numbers_and_nesting(api: Api) -> None:
    for text in ('{"series": "hmi.M_720s", "wavelengths": [Infinity]}',
                 '{"series": "hmi.M_720s", "wavelengths": [1e400]}',
                 '{"series": "hmi.M_720s", "wavelengths": [NaN]}'):
        assert_problem(await post_raw(api, text), 400, "wavelengths.0", "not a finite number")
    deep = '{"series": ' + "[" * 50_000 + "]" * 50_000 + "}"
    assert_problem(await post_raw(api, deep), 400, "nests too deeply")
    for priority in (2**63, 2**31):
        assert_problem(await api.submit({**SPEC, "priority": priority}), 422, "priority",
                       "2147483647")
    top = await api.submit({**SPEC, "priority": 2**31 - 1})
    bottom = await api.submit({**SPEC, "priority": -(2**31)})
    assert (top.status, bottom.status) == (202, 202)
    assert (await api.call("GET", f"jobs/{top.body['id']}")).body["priority"] == 2**31 - 1
    for query in ("offset=9223372036854775808", "offset=2147483648"):
        assert_problem(await api.call("GET", f"jobs?{query}"), 400, "offset")
    assert_problem(await api.call("GET", f"jobs/{top.body['id']}/files?offset=2147483648"),
                   400, "offset")
    for path in ("jobs/%00", "jobs/a%0Ab/files", "jobs?state=%00"):
        assert_problem(await api.call("GET", path), 400, "NUL" if "00" in path else "control")


async def test_unstorable_input_is_a_4xx_and_nothing_is_stored(db_url: str,
                                                               tmp_path: Path) -> None:
    async with served_api(db_url, tmp_path) as api:
        await check_unstorable_text_is_refused(api)
        await check_numbers_and_nesting(api)
        key = await api.submit(SPEC, headers={"Idempotency-Key": "caf\u00e9".encode().decode(
            "latin-1")})
        assert_problem(key, 400, "Idempotency-Key", "printable ASCII")


SUBMIT_TIME_CASES: list[tuple[dict[str, Any], tuple[str, ...]]] = [
    ({"start": "0001-01-01T00:00:00Z"}, ("start", "1600.01.01")),
    ({"start": "2009-01-01T00:00:00Z", "end": "2009-06-01T00:00:00Z"},
     ("would select nothing", "0 records", "2010")),
    ({"cadence": 1e308}, ("cadence", "at most 36500d")),
    ({"cadence": "99999999d"}, ("cadence", "at most 36500d")),
    ({"start": "2014-01-01T00:00:00+99:00"}, ("+99:00", "-14:00 to +14:00")),
    ({"path_template": "{series}/a\u0000b/{filename}"}, ("path_template", "NUL")),
    ({"path_template": "{series}/a\nb/{filename}"}, ("path_template", "control character")),
    ({"path_template": "{series}/" + "x" * 300 + "/{filename}"}, ("300 bytes", "at most 255")),
]
RECORDSET_CASES = [
    ("hmi.M_720s[2014.01.01_TAI/1h", "not a record set JSOC accepts"),
    ("hmi.M_720s[2014.01.01_TAI/1h]]", "not a record set JSOC accepts"),
    ("hmi.M_720s[2014.01.01_TAI/1h]{magnetogram", "not a record set JSOC accepts"),
    ("hmi.M_720s[2014.01.01_TAI/1h][1][2]", "3 prime-key filters"),
]


async def test_what_would_fail_later_is_refused_at_submit(db_url: str, tmp_path: Path) -> None:
    async with served_api(db_url, tmp_path) as api:
        for change, needles in SUBMIT_TIME_CASES:
            body = json.dumps({**SPEC, **change})  # NUL travels as \u0000, as a client sends it
            reply = await post_raw(api, body)
            if "path_template" in change and "\u0000" in change["path_template"]:
                assert_problem(reply, 400, *needles)  # refused as unstorable text
            else:
                assert_problem(reply, 422, *needles)
        for recordset, needle in RECORDSET_CASES:
            assert_problem(await api.submit({"recordset": recordset}), 422, needle,
                           "SERIES[filter]")
        good = await api.submit({"recordset": "hmi.M_720s[2014.01.01_TAI/1h][? QUALITY = 0 ?]"
                                              "{magnetogram}"})
        assert good.status == 202, good.body
        assert len(await api.repo.list_jobs()) == 1


def unreachable_url(db_url: str, tmp_path: Path) -> str:
    """The same backend, but nothing answers: a closed port, or a directory that is gone."""
    if db_url.startswith("postgresql"):
        return f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/gone"
    return f"sqlite+aiosqlite:///{tmp_path}/no-such-dir/jsoc-bulk.db"


async def test_database_down_is_503_on_every_endpoint(db_url: str, tmp_path: Path) -> None:
    down = unreachable_url(db_url, tmp_path)
    settings = Settings(data_dir=tmp_path / "data", database_url=down, email=EMAIL)
    repo = Repo.from_url(down)
    try:
        async with running_api(settings, repo, port=0) as base, aiohttp.ClientSession() as http:
            for method, path in (("GET", "jobs"), ("GET", "jobs/abc"), ("GET", "jobs/abc/files"),
                                 ("POST", "jobs/abc/cancel"), ("DELETE", "jobs/abc"),
                                 ("GET", "workers")):
                async with http.request(method, f"{base}api/v1/{path}") as resp:
                    body = await resp.json(content_type=None)
                    assert resp.status == 503, (method, path, body)
                    assert resp.content_type == "application/problem+json"
                    assert "database" in body["detail"]
            # liveness stays 200 (a restart cures no outage) but says so; readiness is 503
            async with http.get(f"{base}api/v1/health") as resp:
                body = await resp.json()
                assert resp.status == 200 and body["status"] == "degraded", body
            async with http.get(f"{base}api/v1/ready") as resp:
                body = await resp.json(content_type=None)
                assert resp.status == 503 and "database" in str(body).lower(), body
    finally:
        await repo.close()


@pytest.mark.unit
def test_openapi_says_what_a_body_and_the_idempotency_key_need() -> None:
    doc = build_openapi(ENDPOINTS, API_PREFIX, auth=False)
    submit = doc["paths"]["/api/v1/jobs"]["post"]
    key = next(p for p in submit["parameters"] if p["name"] == "Idempotency-Key")
    assert key["schema"] == {"type": "string", "minLength": 1, "maxLength": 255,
                             "pattern": "^[\\x20-\\x7e]{1,255}$"}
    schema = {**doc["components"]["schemas"]["JobSpec"], "components": doc["components"]}
    validator = jsonschema_rs.validator_for(schema)
    assert not validator.is_valid({})
    assert not validator.is_valid({"series": "hmi.M_720s", "start": "2014-01-01"})
    assert validator.is_valid(SPEC)
    assert validator.is_valid({"recordset": "hmi.M_720s[2014.01.01_TAI/1h]"})
    assert validator.is_valid({**{k: v for k, v in SPEC.items() if k != "end"}, "follow": True})
    assert not validator.is_valid({**SPEC, "priority": 2**31})
    assert "400" in doc["paths"]["/api/v1/jobs/{job_id}"]["get"]["responses"]
    assert "503" in doc["paths"]["/api/v1/jobs"]["get"]["responses"]


@pytest.mark.parametrize("reply", [
    '{"status": 0, "primekeys": "T_REC", "keywords": [], "segments": []}',
    '{"status": 0, "primekeys": ["T_REC"], "keywords": [{"name": 5}], "segments": []}',
    '{"status": "zero", "primekeys": ["T_REC"]}',
    '{"status": 0, "note": ' + "[" * 100_000 + "]" * 100_000 + "}",
], ids=["primekeys-not-a-list", "keyword-name-not-text", "status-not-a-number", "nested"])
async def test_malformed_series_struct_at_submit_is_503(db_url: str, tmp_path: Path,
                                                        reply: str) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=reply, content_type="application/json")

    async with serving(handler) as jsoc, served_api(db_url, tmp_path, jsoc_url=jsoc) as api:
        answer = await api.submit(SPEC)
        assert_problem(answer, 503, "malformed", "try again later")
        assert await api.repo.list_jobs() == []


async def test_cli_refuses_unstorable_text_before_sending(tmp_path: Path) -> None:
    """A spec file with NUL or Infinity, or an argument that is not UTF-8: one clear line from
    the CLI itself (it never reaches the server: nothing listens at the URL)."""
    nobody = f"http://127.0.0.1:{free_port()}/"
    spec_file = tmp_path / "job.json"
    spec_file.write_text('{"series": "hmi.M_720s", "start": "2014-01-01", "end": "2014-01-02",'
                         ' "where": ["QUALITY = \\u0000"], "wavelengths": [Infinity]}')
    from_file = await jsoc_bulk(nobody, "submit", str(spec_file))
    assert_one_line_error(from_file, "where.0: contains a NUL", "wavelengths.0: inf is not a "
                          "finite number")
    not_utf8 = await jsoc_bulk(nobody, "submit", "--series", "hmi.M_720s", "--start",
                               "2014-01-01", "--end", "2014-01-02", "--where",
                               b"QUALITY = \xff".decode("utf-8", "surrogateescape"))
    assert_one_line_error(not_utf8, "lone surrogate", "UTF-8")


async def test_a_job_stored_with_a_lone_surrogate_still_reads(db_url: str,
                                                              tmp_path: Path) -> None:
    """A row stored before input was checked (as the API once did) no longer makes the
    listing and the job's page answer 500: the text is sent escaped."""
    async with served_api(db_url, tmp_path) as api:
        legacy = {**SPEC, "path_template": "{series}/\ud800/{filename}"}
        job, _ = await api.repo.create_job(legacy, notify_email=EMAIL)
        listing = await api.call("GET", "jobs")
        one = await api.call("GET", f"jobs/{job.id}")
        assert (listing.status, one.status) == (200, 200), (listing.body, one.body)
        assert one.body["spec"]["path_template"] == legacy["path_template"]
        assert [j["id"] for j in listing.body["items"]] == [job.id]
