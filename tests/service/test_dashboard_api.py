"""The dashboard's server side over real HTTP on SQLite and Postgres: a job's exports, the
politeness figures, and the page and its assets (public, while the API stays behind the token)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.db.models import EXPORT_STATES, LOCAL_HOST
from tests.service.api_harness import EMAIL, Api, assert_problem, served_api
from tests.service.rows import FILE_HOST, job_with_chunks, ready_export

ASSETS = Path(__file__).parents[2] / "service" / "dashboard"
SVG_NAMESPACE = "http://www.w3.org/2000/svg"


async def test_exports_list_request_ids_states_and_chunk_progress(api: Api) -> None:
    job_id = await job_with_chunks(api.repo, 2)
    export_id, chunk_id = await ready_export(api.repo, job_id, ["a", "b", "c"], size=100)
    done, failed = await api.repo.claim_files_to_download("w1", FILE_HOST, max_per_host=2, limit=2)
    assert await api.repo.finish_file(done.file_id, sha256="0" * 64, size=100,
                                      lease_token=done.lease_token)
    assert await api.repo.fail_file(failed.file_id, "HTTP 404", lease_token=failed.lease_token)
    second = await api.repo.claim_chunk_to_export("w2", max_pending_per_email=5)
    assert second is not None

    page = (await api.call("GET", f"jobs/{job_id}/exports")).body
    assert [e["id"] for e in page["items"]] == [export_id, second.export_id]
    ready, reserving = page["items"]
    assert ready["request_id"] == "JSOC_1" and ready["state"] == "ready"
    assert ready["chunk_id"] == chunk_id and ready["chunk_state"] == "downloading"
    assert (ready["files_open"], ready["files_done"], ready["files_failed"]) == (1, 1, 1)
    assert ready["bytes_done"] == 100 and ready["bytes_expected"] == 300
    assert reserving["request_id"] is None and reserving["state"] == "reserving"
    assert reserving["files_done"] == 0 and page["next_offset"] is None

    only = (await api.call("GET", f"jobs/{job_id}/exports", params={"state": "reserving"})).body
    assert [e["id"] for e in only["items"]] == [second.export_id]
    first = (await api.call("GET", f"jobs/{job_id}/exports", params={"limit": "1"})).body
    assert [e["id"] for e in first["items"]] == [export_id] and first["next_offset"] == 1


async def test_exports_bad_input_gets_problem_documents(api: Api) -> None:
    job_id = await job_with_chunks(api.repo, 1)
    assert_problem(await api.call("GET", "jobs/nope/exports"), 404, "nope")
    path = f"jobs/{job_id}/exports"
    assert_problem(await api.call("GET", path, params={"state": "done"}), 400, *EXPORT_STATES)
    assert_problem(await api.call("GET", path, params={"limit": "0"}), 400, "limit")
    assert_problem(await api.call("GET", path, params={"sort": "id"}), 400,
                   "accepted parameters: state, limit, offset")


async def test_politeness_counts_pending_exports_and_connections(db_url: str,
                                                                 tmp_path: Path) -> None:
    async with served_api(db_url, tmp_path, max_pending_exports_per_email=2,
                          host_connection_limits={FILE_HOST: 3}) as api:
        empty = (await api.call("GET", "politeness")).body
        assert empty == {"emails": [], "hosts": []}
        job_id = await job_with_chunks(api.repo, 3)
        await ready_export(api.repo, job_id, ["a", "b", "c", "d"])  # ready: not pending
        assert await api.repo.claim_chunk_to_export("w1", max_pending_per_email=2)
        await api.repo.claim_files_to_download("w1", FILE_HOST, max_per_host=3, limit=2)
        lane = await api.repo.claim_file_batch("w2", FILE_HOST, lane="w2/lane", max_per_host=3,
                                               max_files=2)
        assert len(lane) == 2  # one connection holding two files

        body = (await api.call("GET", "politeness")).body
    assert body["emails"] == [{"email": EMAIL, "pending_exports": 1, "limit": 2}]
    hosts = {h["host"]: h for h in body["hosts"]}
    assert hosts[FILE_HOST] == {"host": FILE_HOST, "active_connections": 3, "limit": 3}
    assert hosts[LOCAL_HOST]["active_connections"] == 0
    assert hosts[LOCAL_HOST]["limit"] == api.settings.global_download_limit


def _module_imports(text: str) -> set[str]:
    return set(re.findall(r'from "\./([\w.-]+)"', text))


async def test_page_and_assets_are_public_and_the_api_is_not(db_url: str,
                                                             tmp_path: Path) -> None:
    token = "page-test-token"
    async with served_api(db_url, tmp_path, token=token) as api:
        async with api.http.get(api.base_url) as resp:
            page = await resp.text()
            assert resp.status == 200 and resp.content_type == "text/html"
            assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
            assert resp.headers["Referrer-Policy"] == "no-referrer"
        wanted = set(re.findall(r'(?:src|href)="/dashboard/([\w.-]+)"', page))
        served: dict[str, str] = {}
        while wanted - set(served):  # the page's assets and every module they import
            name = sorted(wanted - set(served))[0]
            async with api.http.get(f"{api.base_url}dashboard/{name}") as resp:
                assert resp.status == 200, name
                served[name] = await resp.text()
            wanted |= _module_imports(served[name])
        assert {"app.js", "api.js", "style.css"} <= set(served)
        for name in ("nope.js", "..%2Fapp.py", "%2E%2E%2F%2E%2E%2Fpyproject.toml"):
            async with api.http.get(f"{api.base_url}dashboard/{name}") as resp:
                assert resp.status == 404 and resp.content_type == "application/problem+json"
        assert_problem(await api.call("GET", "politeness"), 401, "Authorization: Bearer")
        assert_problem(await api.call("GET", "jobs/x/exports"), 401)
        async with api.http.post(api.base_url) as resp:
            assert resp.status == 401  # only reading the page is public


@pytest.mark.unit
def test_assets_load_nothing_from_elsewhere() -> None:
    """No CDN, no external font or script: every URL in the assets is the page's own."""
    for path in ASSETS.iterdir():
        text = path.read_text().replace(SVG_NAMESPACE, "")
        assert not re.search(r"(https?:)?//[\w-]+\.[\w.-]+", text), path.name
