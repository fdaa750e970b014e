"""Submit-time checks that ask JSOC (the emulator over HTTP), on both databases: the preview,
a range that selects nothing, the notify address (checkAddress), misspelt series and
wavelengths the series lacks; and the record set a job shows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service.jsoc.lookups import REGISTER_URL, verdict_for
from tests.service.api_harness import EMAIL, PENDING_EMAIL, SPEC, Api, assert_problem, served_api

AIA = {"series": "aia.lev1_euv_12s", "start": "2014-01-01T00:00:00Z",
       "end": "2014-01-01T00:01:00Z", "wavelengths": [171, 193], "segments": ["image"]}
BEFORE_SDO = {**AIA, "start": "2009-01-01T00:00:00Z", "end": "2009-01-01T01:00:00Z",
              "wavelengths": [171]}


@pytest.fixture
async def api(db_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    async with served_api(db_url, tmp_path, max_chunk_records=4) as served:
        yield served


async def rs_count(api: Api, recordset: str) -> int:
    async with api.http.get(f"{api.jsoc_url}cgi-bin/ajax/jsoc_info",
                            params={"op": "rs_summary", "ds": recordset}) as resp:
        return int((await resp.json(content_type=None))["count"])


async def test_preview_counts_sizes_and_cuts_like_jsoc(api: Api) -> None:
    reply = await api.call("POST", "jobs/preview", json=AIA)
    assert reply.status == 200, reply.body
    body = reply.body
    assert body["recordset"] == ("aia.lev1_euv_12s[2014.01.01_00:00:35_TAI-"
                                 "2014.01.01_00:01:35_TAI][171,193]{image}")
    assert body["records"] == await rs_count(api, body["recordset"]) == 2 * 6  # 6 slots
    assert body["first_record"] == "aia.lev1_euv_12s[2014-01-01T00:00:01Z][171]"
    assert body["last_record"] == "aia.lev1_euv_12s[2014-01-01T00:01:01Z][193]"
    assert body["exports"] == 3  # 4 records per export, 2 per slot: 6 slots in 3 exports
    shown = body["export_recordsets"]
    assert len(shown) == 3
    assert sum([await rs_count(api, rs) for rs in shown]) == body["records"]
    assert body["est_bytes"] > 0 and body["est_bytes"] % body["records"] == 0
    assert await api.repo.list_jobs() == []  # nothing stored
    documented = (await api.call("GET", "openapi.json")).body["paths"]["/api/v1/jobs/preview"]
    assert documented["post"]["operationId"] == "previewJob"
    assert documented["post"]["requestBody"]["content"]["application/json"]["schema"] == \
        {"$ref": "#/components/schemas/JobSpec"}  # the same body as POST /jobs


async def test_nothing_selected_is_a_clear_answer_and_refused_on_submit(api: Api) -> None:
    preview = await api.call("POST", "jobs/preview", json=BEFORE_SDO)
    assert preview.status == 200
    assert preview.body["records"] == 0 and preview.body["exports"] == 0
    assert preview.body["message"].startswith("0 records: JSOC has no records for ")
    assert "has records from aia.lev1_euv_12s[2010-05-13" in preview.body["message"]
    assert_problem(await api.submit(BEFORE_SDO), 422, "would select nothing", "0 records")
    assert await api.repo.list_jobs() == []


async def test_notify_addresses_jsoc_refuses_get_what_to_do(api: Api) -> None:
    unregistered = await api.submit({**SPEC, "notify": "nobody@example.org"})
    assert_problem(unregistered, 422, "nobody@example.org", "not registered", REGISTER_URL)
    assert unregistered.body["errors"][0]["field"] == "notify"
    pending = await api.submit({**SPEC, "notify": PENDING_EMAIL})
    assert_problem(pending, 422, PENDING_EMAIL, "pending", "confirmation mail")
    ok = await api.submit({**SPEC, "notify": EMAIL})
    assert ok.status == 202
    detail = (await api.call("GET", f"jobs/{ok.body['id']}")).body
    assert detail["recent_errors"] == []  # checked: no warning
    assert len(await api.repo.list_jobs()) == 1


async def test_misspelt_series_and_foreign_wavelengths(api: Api) -> None:
    typo = await api.submit({**SPEC, "series": "hmi.M_720"})
    assert_problem(typo, 422, "hmi.M_720", "did you mean", "hmi.M_720s")
    assert typo.body["errors"][0]["field"] == "series"
    wrong = await api.call("POST", "jobs/preview", json={**AIA, "wavelengths": [171, 1600]})
    assert_problem(wrong, 422, "WAVELNTH 1600 is not a wavelength of aia.lev1_euv_12s",
                   "94, 131, 171, 193, 211, 304, 335")
    as_key = {**AIA, "wavelengths": None, "prime_keys": {"WAVELNTH": 172}}
    assert_problem(await api.submit(as_key), 422, "WAVELNTH 172 is not a wavelength")


async def test_a_job_shows_the_record_set_it_resolved_to(api: Api) -> None:
    job = (await api.submit(SPEC)).body
    detail = (await api.call("GET", f"jobs/{job['id']}")).body
    assert detail["recordset"] == "hmi.M_720s[2014.01.01_00:00:00_TAI-2014.01.01_01:00:00_TAI]"
    assert await rs_count(api, detail["recordset"]) == 6  # 00:00 … 01:00, both ends
    raw = (await api.submit({"recordset": "hmi.M_720s[2014.01.01_TAI/1h]"})).body
    assert (await api.call("GET", f"jobs/{raw['id']}")).body["recordset"] == \
        "hmi.M_720s[2014.01.01_TAI/1h]"


@pytest.mark.unit
@pytest.mark.parametrize(("status", "outcome", "needle"), [
    (2, "ok", ""), (4, "refused", REGISTER_URL), (3, "refused", "confirmation mail"),
    (-2, "refused", "not a valid email address"), (-5, "unknown", "status -5"),
])
def test_check_address_statuses_say_what_to_do(status: int, outcome: str, needle: str) -> None:
    verdict = verdict_for("me@example.org", status)
    assert verdict.outcome == outcome and needle in verdict.message


async def test_preview_of_a_mirror_runs_to_jsocs_newest_record(api: Api) -> None:
    mirror = {"series": "hmi.M_720s", "start": "2026-01-01T00:00:00Z", "follow": True,
              "segments": ["magnetogram"]}

    async def newest() -> str:
        async with api.http.get(f"{api.jsoc_url}cgi-bin/ajax/jsoc_info", params={
                "op": "rs_list", "ds": "hmi.M_720s[$]", "key": "T_REC", "R": 1,
                "n": -1}) as resp:
            return (await resp.json(content_type=None))["recinfo"][-1]["name"]

    before = await newest()
    preview = (await api.call("POST", "jobs/preview", json=mirror)).body
    assert preview["last_record"] in (before, await newest())  # JSOC's clock runs on
    assert preview["records"] == await rs_count(api, preview["recordset"]) > 1000
    assert preview["recordset"].startswith("hmi.M_720s[2026.01.01_00:00:37_TAI-")
