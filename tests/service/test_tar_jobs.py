"""url-tar jobs end to end in-process (real emulator over HTTP, SQLite and Postgres, files on
disk): the tar is unpacked into per-record rows at their path_template destinations, a cut tar
resumes from a member boundary, stored copies are shared with per-file jobs, and ``auto`` picks
url-tar for many small files."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import update

from service.db.models import File
from service.db.repo import Repo
from service.db.tar_rows import is_tar_key, member_name
from service.jobspec import JobSpec
from service.jsoc.metadata import SegmentInfo, SeriesMeta
from service.manifest import manifest_name, read_manifest
from service.settings import load_settings
from service.stages.method_choice import chunk_method
from service.stages.staging_estimate import StagingEstimate, estimate_staging
from tests.service.jobs_harness import (
    EMAIL,
    Running,
    finish_with_worker,
    job_spec,
    make_settings,
    no_politeness_violations,
    run_job_to_end,
    sha256,
    wait_for,
)

pytestmark = pytest.mark.emulator(emails=[EMAIL], staging_delay=0.05, file_size=8000)
TEMPLATE = "{series}/{T_REC:%Y/%m/%d}/{filename}"
SHARP = "hmi.sharp_720s[4864][2014.11.30_00:00_TAI/1h]{continuum,magnetogram}"


def tar_paths(emu: Any) -> list[str]:
    return sorted(p for p in emu.stats()["files"] if p.endswith(".tar"))


async def tar_contents(emu: Any, path: str) -> dict[str, str]:
    """Member name -> sha256 of a tar the emulator serves (read after the job's checks)."""
    async with aiohttp.ClientSession() as session, \
            session.get(emu.base_url + path.lstrip("/")) as resp:
        data = await resp.read()
    assert hashlib.sha256(data).hexdigest() == emu.manifest()[path]["sha256"]
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: hashlib.sha256(tar.extractfile(m).read()).hexdigest()  # type: ignore[union-attr]
                for m in tar.getmembers()}


async def split_rows(repo: Repo, job_id: str) -> tuple[list[File], list[File]]:
    """(tar rows, member rows) of a job."""
    rows = await repo.list_files(job_id, limit=1000)
    return [f for f in rows if is_tar_key(f.file_key)], [f for f in rows
                                                         if not is_tar_key(f.file_key)]


async def check_members(emu: Any, root: Path, members: list[File]) -> None:
    """Every member done at its destination with the tar's bytes; nothing else on disk."""
    contents: dict[str, str] = {}
    for path in tar_paths(emu):
        contents.update(await tar_contents(emu, path))
    for f in members:
        name = member_name(f.url)
        assert f.state == "done" and name is not None and "{" not in f.file_key
        assert sha256(root / f.dest_path) == contents[name] == f.sha256, name
    on_disk = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    manifest = [p for p in on_disk if Path(p).name == manifest_name(members[0].job_id)]
    assert len(manifest) == 1, on_disk  # the job's manifest lists every member
    listed = [(Path(manifest[0]).parent / e["path"]).as_posix()
              for e in read_manifest(root / manifest[0])]
    assert sorted(listed) == sorted(f.dest_path for f in members)
    on_disk.remove(manifest[0])
    assert on_disk == sorted(f.dest_path for f in members)  # no tar, no index, no .part


async def test_url_tar_job_places_every_member(emu: Any, repo: Repo, db_url: str,
                                               tmp_path: Path) -> None:
    settings = make_settings(tmp_path, emu.base_url, db_url, max_chunk_records=3)
    job_id = await run_job_to_end(settings, repo, job_spec(6, method="url-tar",
                                                           path_template=TEMPLATE))
    assert (await repo.get_job(job_id)).state == "succeeded"
    tars, members = await split_rows(repo, job_id)
    assert len(tars) == 2 and {t.state for t in tars} == {"done"}  # one tar per chunk
    assert len(members) == 6
    assert all(f.dest_path.startswith("hmi.M_45s/2014/01/01/hmi.m_45s.2014")
               and f.file_key.startswith("fits:hmi.M_45s[") and f.segment == "magnetogram"
               for f in members)
    summary = await repo.job_summary(job_id)
    assert summary.files == {"done": 6}  # the tar rows are not files of the job
    assert summary.bytes_done == sum(f.bytes_done for f in members)
    assert [e.method for e in await repo.list_exports(job_id)] == ["url-tar", "url-tar"]
    stats = emu.stats()
    assert [stats["files"][p]["requests"] for p in tar_paths(emu)] == [1, 1]
    await check_members(emu, settings.download_dir, members)
    no_politeness_violations(emu)


async def test_two_segments_per_record_and_a_second_job_by_url(
        emu: Any, repo: Repo, db_url: str, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, emu.base_url, db_url)
    first = await run_job_to_end(settings, repo, {"recordset": SHARP, "method": "url-tar",
                                                  "path_template": "{series}/{segment}/{filename}"})
    _, members = await split_rows(repo, first)
    assert len(members) == 10 and {f.segment for f in members} == {"continuum", "magnetogram"}
    root = settings.download_dir
    await check_members(emu, root, members)
    downloads = emu.stats()["clients"]["127.0.0.1"]["download_requests"]

    second = await run_job_to_end(settings, repo, {"recordset": SHARP, "method": "url",
                                                   "path_template": "copy/{filename}"})
    assert (await repo.get_job(second)).state == "succeeded"
    assert emu.stats()["clients"]["127.0.0.1"]["download_requests"] == downloads  # none
    assert [e.method for e in await repo.list_exports(second)] == ["url"]
    old = {f.file_key: f for f in members}
    new = await repo.list_files(second)
    assert len(new) == 10 and {f.file_key for f in new} == set(old)  # the same keys
    for f in new:
        assert f.state == "done" and f.dest_path.startswith("copy/")
        assert sha256(root / f.dest_path) == old[f.file_key].sha256 == f.sha256


async def test_url_tar_after_a_per_file_job_fetches_no_tar(emu: Any, repo: Repo, db_url: str,
                                                            tmp_path: Path) -> None:
    settings = make_settings(tmp_path, emu.base_url, db_url, max_chunk_records=4)
    first = await run_job_to_end(settings, repo, job_spec(4, method="url"))
    downloads = emu.stats()["clients"]["127.0.0.1"]["download_requests"]
    second = await run_job_to_end(settings, repo, job_spec(4, method="url-tar",
                                                           path_template="again/{filename}"))
    assert (await repo.get_job(second)).state == "succeeded"
    assert emu.stats()["clients"]["127.0.0.1"]["download_requests"] == downloads
    assert tar_paths(emu) == []  # every member came from the stored copies
    [tar], members = await split_rows(repo, second)
    assert tar.state == "done" and tar.bytes_done == 0
    old = {f.file_key: f.sha256 for f in await repo.list_files(first)}
    assert {f.file_key: f.sha256 for f in members} == old
    assert (await repo.job_summary(second)).files == {"done": 4}


@pytest.mark.parametrize("validator_lost", [False, True])
async def test_cut_tar_resumes_without_rewriting_placed_members(
        emu: Any, repo: Repo, db_url: str, tmp_path: Path, validator_lost: bool) -> None:
    """The tar is cut mid-way; the worker stops and its tar row is left as a killed worker's
    (downloading, lease expired); a second worker resumes from the last member boundary, or
    (validator lost) reads the tar from its start, skipping the members already placed."""
    settings = make_settings(tmp_path, emu.base_url, db_url, max_chunk_records=12,
                             lease_seconds=30.0)
    job, _ = await repo.create_job(job_spec(12, method="url-tar"), notify_email=EMAIL)
    emu.set_faults(truncate_rate=1.0, truncate_fraction=0.5)
    running = Running(settings, repo, worker_id="first")

    async def resumable() -> bool:
        tars, _ = await split_rows(repo, job.id)
        return bool(tars) and tars[0].bytes_done > 0
    await wait_for(resumable, 20, "part of the tar unpacked")
    await running.stop()
    emu.set_faults(truncate_rate=0.0)
    [tar], members = await split_rows(repo, job.id)
    placed = {f.dest_path: (settings.download_dir / f.dest_path).stat()
              for f in members if f.state == "done"}
    assert 0 < len(placed) < 12 and tar.state == "pending"
    killed: dict[str, Any] = {"state": "downloading", "lease_owner": "killed",
                              "lease_expires_at": repo.now()}
    if validator_lost:
        killed.update(etag=None, last_modified=None)
    async with repo.engine.begin() as conn:  # as if the worker had been killed
        await conn.execute(update(File).where(File.id == tar.id).values(killed))
    first_copy = emu.stats()["files"][tar_paths(emu)[0]]["bytes_served"]

    await finish_with_worker(settings, repo, job.id, worker_id="second")
    assert (await repo.get_job(job.id)).state == "succeeded"
    [tar], members = await split_rows(repo, job.id)
    assert tar.state == "done" and len(members) == 12
    for path, before in placed.items():  # not written again
        now = (settings.download_dir / path).stat()
        assert (now.st_ino, now.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    [path] = tar_paths(emu)
    served = emu.stats()["files"][path]
    largest = max(f.bytes_done for f in members)
    cuts = served["requests"] - 1
    assert cuts >= 1 and served["full_downloads"] == (1 if validator_lost else 0)
    if validator_lost:  # read again from byte 0
        assert served["bytes_served_again"] == first_copy
    else:
        assert served["bytes_served_again"] <= cuts * (largest + 1024)  # a member a cut
    assert (await repo.job_summary(job.id)).files == {"done": 12}
    await check_members(emu, settings.download_dir, members)


async def test_auto_picks_url_tar_for_many_small_files(emu: Any, repo: Repo, db_url: str,
                                                       tmp_path: Path) -> None:
    # hmi.M_45s records are about 12 MB each in the catalog: small enough at 100 MB
    # (and on loopback the round trip is tiny: expect no staging cost to weigh against it)
    settings = make_settings(tmp_path, emu.base_url, db_url, max_chunk_records=4,
                             tar_min_files=3, tar_max_mean_mb=100, tar_staging_seconds=0)
    job_id = await run_job_to_end(settings, repo, job_spec(6, path_template=TEMPLATE))
    assert (await repo.get_job(job_id)).state == "succeeded"
    exports = await repo.list_exports(job_id)
    assert [e.method for e in exports] == ["url-tar", "url"]  # 4 files, then 2 (< 3)
    tars, members = await split_rows(repo, job_id)
    assert len(tars) == 1 and len(members) == 6 and {f.state for f in members} == {"done"}
    assert (await repo.job_summary(job_id)).files == {"done": 6}


def _meta(segments: int) -> SeriesMeta:
    return SeriesMeta("hmi.x", "", [], [], [SegmentInfo(f"s{i}") for i in range(segments)])


@pytest.mark.unit
@pytest.mark.parametrize(("protocol", "records", "mb_per_record", "segments", "rtt", "expected"), [
    ("as-is", 1000, 0.2, 1, 0.05, "url-tar"),     # many small files far away: one tar
    ("fits", 1000, 0.2, 1, 0.05, "url-tar"),
    ("as-is", 1000, 0.2, 1, 0.001, "url_quick"),  # the same on a short path: per file
    ("as-is", 300, 0.2, 1, 0.05, "url_quick"),    # 15 s of round trips < 30 s of staging
    ("fits", 100, 0.2, 1, 1.0, "url"),            # too few files, however far
    ("as-is", 1000, 50.0, 1, 0.05, "url_quick"),  # big files: the round trip does not matter
    ("fits", 500, 1.0, 2, 0.05, "url-tar"),       # 1,000 files of 0.5 MB (two segments a record)
    ("fits", 0, 0.0, 1, 0.05, "url"),             # no estimate: per file
    ("fits", 1000, 0.2, 1, None, "url"),          # no round trip measured yet: per file
])
def test_auto_method_choice(protocol: str, records: int, mb_per_record: float, segments: int,
                            rtt: float | None, expected: str) -> None:
    settings = load_settings(email=EMAIL)
    spec = JobSpec(series="hmi.x", start="2014.01.01", end="2014.01.02", protocol=protocol)
    est_bytes = int(records * mb_per_record * 2**20)
    nothing_seen = estimate_staging([], settings.tar_staging_seconds)  # 30 s, flat
    kw = {"est_records": records, "est_bytes": est_bytes, "round_trip": rtt,
          "staging": nothing_seen}
    assert chunk_method(spec, _meta(segments), settings, **kw) == expected
    explicit = spec.model_copy(update={"method": "url"})
    assert chunk_method(explicit, _meta(segments), settings, **kw) == "url"
    never = load_settings(email=EMAIL, tar_max_mean_mb=0)
    assert chunk_method(spec, _meta(segments), never, **kw) != "url-tar"


@pytest.mark.parametrize(("records", "staging", "expected"), [
    (300, StagingEstimate(10.0, 0.0, 1), "url-tar"),    # 15 s of round trips > 10 s learned
    (1000, StagingEstimate(20.0, 0.5, 4), "url_quick"),  # 50 s < 520 s: staging grows faster
    (1000, StagingEstimate(20.0, 0.02, 4), "url-tar"),   # 50 s > 40 s
    (500, StagingEstimate(20.0, 0.02, 4), "url_quick"),  # 25 s < 30 s
])
def test_auto_weighs_the_learned_staging(records: int, staging: StagingEstimate,
                                         expected: str) -> None:
    spec = JobSpec(series="hmi.x", start="2014.01.01", end="2014.01.02", protocol="as-is")
    assert chunk_method(spec, _meta(1), load_settings(email=EMAIL), est_records=records,
                        est_bytes=records * 100_000, round_trip=0.05,
                        staging=staging) == expected
