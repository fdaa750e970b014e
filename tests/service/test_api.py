"""REST API over real HTTP on SQLite and Postgres, validating jobs against the emulator."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from service.api.rates import RateTracker, eta_seconds
from service.db.models import CHUNK_STATES, FILE_STATES, JOB_STATES
from service.jsoc.client import JsocClient
from tests.e2e.procs import free_port
from tests.service.api_harness import EMAIL, SPEC, Api, assert_problem, served_api
from tests.service.rows import FILE_HOST, job_with_chunks, ready_export


async def test_submit_returns_202_with_location_and_job(api: Api) -> None:
    reply = await api.submit(SPEC)
    assert reply.status == 202
    job = reply.body
    assert reply.headers["Location"] == f"/api/v1/jobs/{job['id']}"
    assert job["state"] == "queued" and job["notify_email"] == EMAIL
    assert {k: job["spec"][k] for k in SPEC} == SPEC
    fetched = await api.call("GET", reply.headers["Location"].removeprefix("/api/v1/"))
    assert fetched.status == 200 and fetched.body["id"] == job["id"]
    stored = await api.repo.get_job(job["id"])
    assert stored is not None and stored.spec["series"] == SPEC["series"]


async def test_idempotency_key_makes_retries_safe(api: Api) -> None:
    first = await api.submit(SPEC, headers={"Idempotency-Key": "req-1"})
    again = await api.submit(SPEC, headers={"Idempotency-Key": "req-1"})
    assert (first.status, again.status) == (202, 200)
    assert again.body["id"] == first.body["id"]
    assert again.headers["Location"] == first.headers["Location"]
    other = await api.submit({**SPEC, "priority": 5}, headers={"Idempotency-Key": "req-1"})
    assert_problem(other, 422, "req-1", first.body["id"], "different spec")
    assert len(await api.repo.list_jobs()) == 1
    assert_problem(await api.submit(SPEC, headers={"Idempotency-Key": "x" * 256}), 400,
                   "Idempotency-Key")


async def test_list_jobs_filters_by_state_and_pages(api: Api) -> None:
    ids = [(await api.submit({**SPEC, "priority": i})).body["id"] for i in range(5)]
    for job_id in ids[:2]:
        assert (await api.call("POST", f"jobs/{job_id}/pause")).status == 200
    paused = await api.call("GET", "jobs", params={"state": "paused"})
    assert sorted(j["id"] for j in paused.body["items"]) == sorted(ids[:2])
    seen, offset = [], 0
    while offset is not None:
        page = await api.call("GET", "jobs", params={"limit": "2", "offset": str(offset)})
        assert page.status == 200 and len(page.body["items"]) <= 2
        seen += [j["id"] for j in page.body["items"]]
        offset = page.body["next_offset"]
    assert sorted(seen) == sorted(ids) and len(seen) == len(ids)
    assert_problem(await api.call("GET", "jobs", params={"state": "bogus"}), 400,
                   "state", *JOB_STATES)
    assert_problem(await api.call("GET", "jobs", params={"limit": "0"}), 400, "limit")
    assert_problem(await api.call("GET", "jobs", params={"colour": "red"}), 400, "colour",
                   "accepted parameters: state, limit, offset")


async def test_job_detail_counts_bytes_rate_eta_and_errors(api: Api) -> None:
    job_id = await job_with_chunks(api.repo, 2)
    await ready_export(api.repo, job_id, ["a", "b", "c"], size=100)
    claims = await api.repo.claim_files_to_download("w1", FILE_HOST, max_per_host=2, limit=2)
    assert await api.repo.update_file_progress(claims[0].file_id, 40, claims[0].lease_token)
    assert await api.repo.fail_file(claims[1].file_id, "HTTP 404 from server",
                                    lease_token=claims[1].lease_token)
    detail = (await api.call("GET", f"jobs/{job_id}")).body
    assert detail["state"] == "running"
    assert detail["chunks"] == {**dict.fromkeys(CHUNK_STATES, 0), "planned": 1,
                                "downloading": 1}
    assert detail["files"] == {**dict.fromkeys(FILE_STATES, 0), "pending": 1,
                               "downloading": 1, "failed": 1}
    assert sum(detail["exports"].values()) == 1 and detail["exports"]["ready"] == 1
    assert detail["bytes_done"] == 40 and detail["bytes_expected"] == 300
    # a chunk is not listed yet: it counts with its estimate (job_with_chunks: 2000 bytes),
    # scaled by what the listed chunk turned out to be (300) against its own estimate (1000)
    assert detail["est_bytes"] == 3000
    expected_total = 300 + round(2000 * 300 / 1000)
    assert detail["bytes_total"] == expected_total
    assert detail["rate_bytes_per_s"] > 0
    assert detail["eta_seconds"] == pytest.approx(
        (expected_total - 40) / detail["rate_bytes_per_s"])
    assert any("HTTP 404 from server" in e["message"] for e in detail["recent_errors"])


async def test_files_listing_filters_and_pages(api: Api) -> None:
    job_id = await job_with_chunks(api.repo, 1)
    names = ["a", "b", "c", "d", "e"]
    await ready_export(api.repo, job_id, names)
    claim = (await api.repo.claim_files_to_download("w1", FILE_HOST))[0]
    listed, offset = [], 0
    while offset is not None:
        page = (await api.call("GET", f"jobs/{job_id}/files",
                               params={"limit": "2", "offset": str(offset)})).body
        listed += page["items"]
        offset = page["next_offset"]
    assert sorted(f["dest_path"] for f in listed) == [f"job/{n}.fits" for n in names]
    downloading = (await api.call("GET", f"jobs/{job_id}/files",
                                  params={"state": "downloading"})).body["items"]
    assert [f["id"] for f in downloading] == [claim.file_id]
    assert_problem(await api.call("GET", "jobs/nope/files"), 404, "nope")
    assert_problem(await api.call("GET", f"jobs/{job_id}/files", params={"state": "x"}), 400,
                   *FILE_STATES)


async def test_cancel_pause_resume_and_invalid_changes(api: Api) -> None:
    job_id = (await api.submit()).body["id"]
    assert (await api.call("POST", f"jobs/{job_id}/pause")).body["state"] == "paused"
    assert (await api.call("POST", f"jobs/{job_id}/resume")).body["state"] == "running"
    assert (await api.call("POST", f"jobs/{job_id}/cancel")).body["state"] == "cancelled"
    for action in ("resume", "pause", "retry"):
        reply = await api.call("POST", f"jobs/{job_id}/{action}")
        assert_problem(reply, 409, action, job_id, "cancelled")
    for action in ("cancel", "pause", "resume", "retry"):
        assert_problem(await api.call("POST", f"jobs/missing/{action}"), 404, "missing")
    assert (await api.repo.get_job(job_id)).state == "cancelled"  # type: ignore[union-attr]


async def test_retry_puts_failed_files_back(api: Api) -> None:
    job_id = await job_with_chunks(api.repo, 1)
    await ready_export(api.repo, job_id, ["a"])
    claim = (await api.repo.claim_files_to_download("w1", FILE_HOST))[0]
    await api.repo.fail_file(claim.file_id, "boom", lease_token=claim.lease_token)
    assert (await api.call("GET", f"jobs/{job_id}")).body["state"] == "failed"
    retried = await api.call("POST", f"jobs/{job_id}/retry")
    assert retried.status == 200 and retried.body["state"] == "running"
    files = (await api.call("GET", f"jobs/{job_id}")).body["files"]
    assert files["pending"] == 1 and files["failed"] == 0


async def _finish_all(api: Api, job_id: str, root: Path) -> None:
    """Download stand-in: write each claimed file under ``root`` and mark it done."""
    for claim in await api.repo.claim_files_to_download("w1", FILE_HOST, max_per_host=9, limit=9):
        dest = root / claim.dest_path
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(b"x" * 100)
        assert await api.repo.finish_file(claim.file_id, sha256="0" * 64, size=100,
                                          lease_token=claim.lease_token)


async def test_delete_keeps_files_unless_asked_and_never_leaves_the_root(
        api: Api, tmp_path: Path) -> None:
    root = api.settings.download_dir
    assert root is not None
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "b.fits").write_bytes(b"precious")

    kept_job = await job_with_chunks(api.repo, 1)
    await ready_export(api.repo, kept_job, ["k"], dest="kept")
    await _finish_all(api, kept_job, root)
    deleted = await api.call("DELETE", f"jobs/{kept_job}")
    assert deleted.status == 200 and deleted.body["files_deleted"] == 0
    assert (root / "kept/k.fits").exists()
    assert_problem(await api.call("GET", f"jobs/{kept_job}"), 404, kept_job)

    job_id = await job_with_chunks(api.repo, 2)
    await ready_export(api.repo, job_id, ["a"], dest="job")
    await ready_export(api.repo, job_id, ["b"], dest="esc")
    await _finish_all(api, job_id, root)
    (root / "esc/b.fits").unlink()
    (root / "esc").rmdir()
    (root / "esc").symlink_to(outside)  # after the fact, the directory leads outside the root
    reply = await api.call("DELETE", f"jobs/{job_id}", params={"delete_files": "true"})
    assert reply.status == 200, reply.body
    assert reply.body["files_deleted"] == 1 and reply.body["files_kept"] == ["esc/b.fits"]
    assert not (root / "job").exists()  # the file and its emptied directory
    assert (outside / "b.fits").read_bytes() == b"precious"
    assert await api.repo.get_stored_file("k:a") is None
    running = await job_with_chunks(api.repo, 1)
    assert_problem(await api.call("DELETE", f"jobs/{running}"), 409, "running")
    assert_problem(await api.call("DELETE", f"jobs/{running}",
                                  params={"delete_files": "maybe"}), 400, "delete_files")


async def test_health_and_workers(api: Api) -> None:
    health = await api.call("GET", "health")
    assert health.status == 200 and health.body["status"] == "ok"
    assert health.body["database"] == "ok" and health.body["auth"] is False
    await api.repo.heartbeat("w-1", hostname="node1", pid=42, holding={"files": [7]})
    await api.repo.heartbeat("w-2", hostname="node2", pid=43)
    await api.repo.release_leases("w-2")
    workers = {w["id"]: w for w in (await api.call("GET", "workers")).body["items"]}
    assert workers["w-1"]["alive"] and workers["w-1"]["holding"] == {"files": [7]}
    assert workers["w-1"]["hostname"] == "node1" and workers["w-1"]["pid"] == 42
    assert not workers["w-2"]["alive"] and workers["w-2"]["stopped_at"] is not None


async def test_token_required_when_configured(db_url: str, tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    token = "s3cret-token-value"
    caplog.set_level(logging.DEBUG)
    async with served_api(db_url, tmp_path, token=token) as api:
        missing = await api.call("GET", "jobs")
        assert_problem(missing, 401, "Authorization: Bearer")
        # probes cannot send a token: liveness and readiness answer without it
        assert (await api.call("GET", "health")).body["auth"] is True
        assert (await api.call("GET", "ready")).status == 200
        assert missing.headers["WWW-Authenticate"].startswith("Bearer")
        assert_problem(await api.call("GET", "jobs", headers={"Authorization": "Bearer nope"}),
                       401, "not valid")
        assert_problem(await api.submit(SPEC, headers={"Authorization": f"Basic {token}"}), 401)
        good = {"Authorization": f"Bearer {token}"}
        assert (await api.call("GET", "health", headers=good)).status == 200
        assert (await api.submit(SPEC, headers=good)).status == 202
        spec = (await api.call("GET", "openapi.json", headers=good)).body
        assert spec["security"] == [{"bearer": []}]
        assert len(await api.repo.list_jobs()) == 1  # only the authorised submission
    assert token not in caplog.text


async def test_bad_bodies_get_problem_documents(api: Api) -> None:
    assert_problem(await api.call("POST", "jobs", data=b'{"series": ',
                                  headers={"Content-Type": "application/json"}),
                   400, "not valid JSON", "line 1")
    assert_problem(await api.call("POST", "jobs", data=b"series=hmi.M_720s",
                                  headers={"Content-Type": "application/x-www-form-urlencoded"}),
                   415, "application/json", "x-www-form-urlencoded")
    assert_problem(await api.call("POST", "jobs", json=[SPEC]), 400, "JSON object")
    assert_problem(await api.call("POST", "jobs", data=b"",
                                  headers={"Content-Type": "application/json"}), 400, "empty")
    reply = await api.submit({**SPEC, "colour": "red"})
    assert_problem(reply, 422, "colour", "accepted fields")
    assert reply.body["errors"][0]["field"] == "colour"
    assert_problem(await api.call("PUT", "jobs"), 405, "PUT", "GET", "POST")
    assert_problem(await api.call("GET", "nowhere"), 404, "/api/v1/nowhere")
    assert await api.repo.list_jobs() == []


async def test_specs_checked_against_series_metadata(api: Api) -> None:
    async with JsocClient(api.jsoc_url) as jsoc:
        meta = await jsoc.series_struct("hmi.M_720s")
    unknown_series = await api.submit({**SPEC, "series": "hmi.nonexistent"})
    assert_problem(unknown_series, 422, "hmi.nonexistent")
    assert unknown_series.body["errors"][0]["field"] == "series"
    segment = await api.submit({**SPEC, "segments": ["magnetogramm"]})
    assert_problem(segment, 422, "magnetogramm", *meta.segment_names)
    keyword = await api.submit({**SPEC, "where": ["QUALTY = 0"]})
    assert_problem(keyword, 422, "QUALTY", "QUALITY")
    bad_time = await api.submit({**SPEC, "start": "yesterday"})
    assert_problem(bad_time, 422, "yesterday", "2014.01.01_00:00:45_TAI")
    assert [e["field"] for e in bad_time.body["errors"]] == ["start"]
    escape = await api.submit({**SPEC, "path_template": "../{filename}"})
    assert_problem(escape, 422, "path_template", "..")
    absolute = await api.submit({**SPEC, "path_template": "/etc/{filename}"})
    assert_problem(absolute, 422, "relative path inside the data directory")
    field = await api.submit({**SPEC, "path_template": "{series}/{NOPE}/{filename}"})
    assert_problem(field, 422, "{NOPE}")
    assert await api.repo.list_jobs() == []


async def test_jsoc_down_is_503_and_no_email_is_422(db_url: str, tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}/"
    async with served_api(db_url, tmp_path, jsoc_url=down) as api:
        reply = await api.submit()
        assert_problem(reply, 503, "hmi.M_720s", "try again later")
        assert int(reply.headers["Retry-After"]) > 0
    async with served_api(db_url, tmp_path / "2", email=None) as api:
        assert_problem(await api.submit(), 422, "notify", "JSOC_BULK_EMAIL")
        with_notify = await api.submit({**SPEC, "notify": "b@example.org"})
        assert with_notify.status == 202
        assert with_notify.body["notify_email"] == "b@example.org"


@pytest.mark.unit
def test_rate_tracker_windows_and_eta() -> None:
    now = [100.0]
    tracker = RateTracker(clock=lambda: now[0], window=10.0)
    assert tracker.observe("j", 0) is None  # one sample: no rate yet
    now[0] += 2
    assert tracker.observe("j", 400) == pytest.approx(200.0)
    now[0] += 20  # the old samples leave the window; the last two span 20 s
    assert tracker.observe("j", 1400) == pytest.approx(1000 / 20)
    now[0] += 5
    assert tracker.observe("j", 100) is None  # went backwards (retry): start over
    assert eta_seconds(100, 600, 50.0) == pytest.approx(10.0)
    assert eta_seconds(600, 600, None) == 0.0
    assert eta_seconds(100, 600, None) is None and eta_seconds(0, 0, 5.0) is None
