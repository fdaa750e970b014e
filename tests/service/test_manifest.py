"""Job manifests: where they go, torn lines cut, lines lost in a crash caught up from the
database (SQLite and Postgres)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.db.repo import Repo
from service.manifest import (
    ManifestWriter,
    fixed_depth,
    manifest_path,
    read_manifest,
    repair_tail,
    t_rec_of,
)
from tests.service.rows import job_with_chunks, ready_export

HOST = "127.0.0.1:9"


@pytest.mark.unit
def test_manifest_goes_where_the_template_stops_being_the_same_for_every_file() -> None:
    assert fixed_depth("{series}/{T_REC:%Y/%m/%d}/{filename}") == 1
    assert fixed_depth("{filename}") == 0
    assert fixed_depth("sdo/{series}/{segment}/{filename}") == 2
    assert fixed_depth("sdo/{series:>5}/{filename}") == 1  # a formatted series may vary
    path = manifest_path(Path("/data"), "{series}/{T_REC:%Y}/{filename}",
                         "hmi.M_720s/2014/a.fits", "J1")
    assert path == Path("/data/hmi.M_720s/jsoc-bulk-manifest-J1.jsonl")
    assert t_rec_of("aia.lev1_euv_12s[2014-01-01T00:00:01Z][171]") == "2014-01-01T00:00:01Z"
    assert t_rec_of("hmi.sharp_720s[377][2014.01.01_00:00:00_TAI]") == \
        "2014.01.01_00:00:00_TAI"


@pytest.mark.unit
def test_a_torn_last_line_is_cut_and_skipped_but_a_bad_line_inside_is_an_error(
        tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text('{"path": "a"}\n{"path": "b"}\n{"path": "c", "si')
    assert [e["path"] for e in read_manifest(path)] == ["a", "b"]
    assert repair_tail(path) and path.read_text() == '{"path": "a"}\n{"path": "b"}\n'
    assert not repair_tail(path)
    path.write_text('{"path": "a"}\nnot json\n{"path": "b"}\n')
    with pytest.raises(ValueError, match=r"m\.jsonl:2: not a JSON line"):
        list(read_manifest(path))


async def _done_files(repo: Repo, names: list[str]) -> tuple[str, list[int]]:
    job_id = await job_with_chunks(repo, 1)
    await ready_export(repo, job_id, names)
    claims = await repo.claim_files_to_download("w1", HOST, max_per_host=9, limit=len(names))
    for c in claims:
        assert await repo.finish_file(c.file_id, sha256="ab" * 32, size=100,
                                      lease_token=c.lease_token)
    return job_id, sorted(c.file_id for c in claims)


async def test_lines_lost_in_a_crash_are_caught_up_and_a_torn_tail_cut(
        repo: Repo, tmp_path: Path) -> None:
    job_id, ids = await _done_files(repo, ["a", "b", "c", "d"])
    writer = ManifestWriter(repo, tmp_path)
    writer.files_done(ids[:2])  # the others' appends were lost: the process died
    await writer.close()
    manifest = tmp_path / f"jsoc-bulk-manifest-{job_id}.jsonl"  # template {filename}: the root
    entries = list(read_manifest(manifest))
    assert sorted(e["path"] for e in entries) == ["job/a.fits", "job/b.fits", "job/c.fits",
                                                  "job/d.fits"]
    assert entries[0] == {"record": "hmi.M_45s[a]", "segment": "magnetogram", "T_REC": None,
                          "path": "job/a.fits", "size": 100, "sha256": "ab" * 32}

    with manifest.open("a") as fh:
        fh.write('{"record": "hmi.M_4')  # a power cut in the middle of an append
    again = ManifestWriter(repo, tmp_path)  # a new process
    again.files_done(ids[3:])
    await again.close()
    lines = manifest.read_text().splitlines()
    assert len(lines) == 5 and json.loads(lines[-1])["path"] == "job/d.fits"
