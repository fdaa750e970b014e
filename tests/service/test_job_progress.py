"""What ``watch`` shows: exports being staged with their JSOC request ids, totals for the whole
range (also the part not planned yet), the download directory, absolute file paths."""

from __future__ import annotations

import pytest

from service.api.rates import estimated_files, estimated_total
from service.cli_progress import status_line
from service.db.models import Job
from service.db.repo import JobSummary
from tests.service.api_harness import Api
from tests.service.rows import job_with_chunks, ready_export

SPEC = {"series": "hmi.M_720s", "start": "2014.01.01_00:00:00_TAI",
        "end": "2014.01.01_04:00:00_TAI"}


@pytest.mark.unit
def test_the_total_covers_the_range_not_planned_yet() -> None:
    # a quarter of the range is planned (chunks are planned a few at a time)
    job = Job(id="j", spec=SPEC, state="running", plan_done=False,
              planned_until="2014.01.01_01:00:00_TAI")
    planning = JobSummary(job=job, chunks={"exporting": 1}, est_bytes=1000)
    assert estimated_total(planning) == 4000
    # listed files turned out half the estimate: the unplanned part is scaled alike
    listed = JobSummary(job=job, chunks={"downloading": 1}, files={"pending": 5},
                        bytes_expected=500, est_bytes=1000)
    assert estimated_total(listed) == 500 + 1500


@pytest.mark.unit
def test_the_total_does_not_jump_when_the_last_chunks_are_listed() -> None:
    # the planner guessed 1000 bytes per chunk; JSOC listed the first chunk at 100
    job = Job(id="j", spec=SPEC, state="running", plan_done=True, planned_until="end")
    one_listed = JobSummary(job=job, chunks={"downloading": 1, "exporting": 3},
                            files={"pending": 4}, bytes_expected=100, est_bytes=4000,
                            est_unlisted=3000)
    all_listed = JobSummary(job=job, chunks={"downloading": 4}, files={"pending": 16},
                            bytes_expected=400, est_bytes=4000)
    assert estimated_total(one_listed) == estimated_total(all_listed) == 400


@pytest.mark.unit
def test_the_file_total_is_estimated_for_the_whole_job_while_chunks_are_unlisted() -> None:
    job = Job(id="j", spec=SPEC, state="running", plan_done=False,
              planned_until="2014.01.01_01:00:00_TAI")
    summary = JobSummary(job=job, chunks={"downloading": 1}, files={"done": 1, "pending": 4},
                         bytes_expected=100, est_bytes=100)
    total = estimated_total(summary)
    assert total == 400 and estimated_files(summary, total) == 20  # 4 x the planned quarter
    line = status_line({"id": "j", "state": "running", "files": {"done": 1, "pending": 4},
                        "files_total": 20})
    assert "files 1/~20" in line
    assert estimated_files(JobSummary(job=job, est_bytes=100), 100) is None  # nothing listed


@pytest.mark.unit
def test_the_status_line_names_exports_being_staged() -> None:
    job = {"id": "J", "state": "running", "files": {}, "chunks": {"planned": 2},
           "active_exports": [
               {"id": 1, "request_id": "JSOC_20140101_001", "state": "polling",
                "jsoc_status": 1},
               {"id": 2, "request_id": None, "state": "reserving", "jsoc_status": None},
               {"id": 3, "request_id": "JSOC_20140101_000", "state": "ready", "jsoc_status": 0}]}
    line = status_line(job)
    assert "staging JSOC_20140101_001 polling (status 1), export 2 reserving," in line
    assert "JSOC_20140101_000" not in line  # ready: no longer staging


async def test_job_detail_lists_exports_and_paths_are_absolute(api: Api) -> None:
    job_id = await job_with_chunks(api.repo, 2)
    await ready_export(api.repo, job_id, ["a", "b"])
    detail = (await api.call("GET", f"jobs/{job_id}")).body
    root = api.settings.download_dir
    assert root is not None and detail["download_dir"] == str(root.resolve())
    assert [(e["request_id"], e["state"]) for e in detail["active_exports"]] == [
        ("JSOC_1", "ready")]
    files = (await api.call("GET", f"jobs/{job_id}/files")).body["items"]
    assert [f["path"] for f in files] == [str(root.resolve() / "job" / n)
                                          for n in ("a.fits", "b.fits")]
    after = (await api.call("GET", f"jobs/{job_id}/files?after_id={files[0]['id']}")).body
    assert [f["id"] for f in after["items"]] == [files[1]["id"]]
