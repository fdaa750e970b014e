"""Tar rows in the repository (SQLite and Postgres): members never claimed on their own, the
tar row left out of the counters, member outcomes fenced by the tar row's lease, members the
tar did not hold failed, a failed tar failing its members, retry and re-export."""

from __future__ import annotations

import asyncio
import hashlib
import io
import tarfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import web

from service.db import UNFENCED
from service.db.repo import FileClaim, Repo
from service.db.repo_files import FileOutcome
from service.db.tar_rows import MemberDone, tar_host, tar_key
from service.manifest import manifest_name, read_manifest
from service.stages.context import open_context
from service.stages.download import download_file
from service.stages.recorder import OutcomeRecorder
from tests.service.jobs_harness import make_settings, sha256
from tests.service.rows import job_with_chunks

HOST = "127.0.0.1:9"
TAR = f"http://{HOST}/SUM1/D2/S00000/JSOC_1.tar"
NAMES = ["a.fits", "b.fits", "c.fits"]


def tar_files(url: str = TAR, names: list[str] = NAMES) -> list[dict[str, Any]]:
    """What the poll stage lists for a url-tar export: the tar row, then its members."""
    return [{"record": "hmi.M_45s[0]", "file_key": tar_key("fits", "hmi.M_45s[0]"), "url": url,
             "dest_path": "hmi.M_45s/JSOC_1.tar"},
            *({"record": f"hmi.M_45s[{n}]", "segment": "magnetogram", "url": f"{url}#{n}",
               "dest_path": f"out/{n}"} for n in names)]


async def ready_tar(repo: Repo, url: str = TAR,
                    names: list[str] = NAMES) -> tuple[str, int]:
    """A running job whose one chunk's url-tar export is ready; returns (job id, export id)."""
    job_id = await job_with_chunks(repo, 1)
    claim = await repo.claim_chunk_to_export("w0", max_pending_per_email=9)
    assert claim is not None
    assert await repo.record_export_submitted(claim.export_id, request_id="JSOC_1", status=2,
                                              wait=0, lease_token=claim.lease_token,
                                              method="url-tar", protocol="fits")
    files = tar_files(url, names)
    assert await repo.record_export_ready(claim.export_id, files=files,
                                          lease_token=UNFENCED) == len(files)
    return job_id, claim.export_id


async def claim_tar(repo: Repo, host: str = HOST) -> FileClaim:
    assert await repo.list_download_hosts() == [host]  # never a tar:<id> pseudo host
    [claim] = await repo.claim_file_batch("w1", host, lane="w1#1", max_files=10)
    return claim


def member(claim: FileClaim, member_id: int, end: int, token: int | None = None) -> FileOutcome:
    return FileOutcome(claim.file_id, "tar_progress", claim.lease_token if token is None
                       else token, bytes_done=end, lease_seconds=60,
                       members=(MemberDone(member_id, "0" * 64, 100),))


async def counts(repo: Repo, job_id: str) -> dict[str, int]:
    return (await repo.job_summary(job_id)).files


async def test_members_wait_for_their_tar_and_missing_ones_fail(repo: Repo) -> None:
    job_id, _ = await ready_tar(repo)
    tar = await claim_tar(repo)
    assert tar.url == TAR and tar.file_key == "tar:fits:hmi.M_45s[0]"
    assert await counts(repo, job_id) == {"pending": 3}  # the tar row is not a file
    members = await repo.tar_members(tar.file_id)
    assert [m.name for m in members] == NAMES
    assert {f.host for f in await repo.list_files(job_id) if f.id != tar.file_id} == {
        tar_host(tar.file_id)}
    a, b, _ = members

    assert await repo.record_file_outcomes([member(tar, a.file_id, 1024, token=0)]) == [False]
    assert await repo.record_file_outcomes(
        [member(tar, a.file_id, 1024), member(tar, b.file_id, 2048),
         FileOutcome(tar.file_id, "tar_done", tar.lease_token, bytes_done=3072)]
    ) == [True, True, True]
    files = {f.id: f for f in await repo.list_files(job_id)}
    assert files[tar.file_id].state == "done" and files[tar.file_id].bytes_done == 3072
    assert [files[m.file_id].state for m in members] == ["done", "done", "failed"]
    assert files[members[2].file_id].error == "not in the tar JSOC_1.tar"
    assert await counts(repo, job_id) == {"done": 2, "failed": 1}
    assert (await repo.get_stored_file(files[a.file_id].file_key)).path == "out/a.fits"
    assert (await repo.get_job(job_id)).state == "completed_with_errors"

    await repo.retry_job(job_id)  # the missing member waits again: its tar is read again
    tar = await claim_tar(repo)
    assert tar.bytes_done == 0 and tar.etag is None
    assert [m.name for m in await repo.tar_members(tar.file_id)] == ["c.fits"]
    assert await counts(repo, job_id) == {"done": 2, "pending": 1}
    assert await repo.fail_file(tar.file_id, "tar member 'x' refused: it is a symlink",
                                lease_token=tar.lease_token)
    files = {f.id: f for f in await repo.list_files(job_id)}
    assert files[members[2].file_id].error == "tar member 'x' refused: it is a symlink"
    assert files[tar.file_id].state == "failed"
    assert await counts(repo, job_id) == {"done": 2, "failed": 1}
    assert (await repo.get_job(job_id)).state == "completed_with_errors"


async def test_the_recorder_gathers_a_tars_members_in_one_outcome(repo: Repo) -> None:
    job_id, _ = await ready_tar(repo)
    tar = await claim_tar(repo)
    a, b, _ = await repo.tar_members(tar.file_id)
    recorder = OutcomeRecorder(repo, interval=60)
    futures = [recorder.add(FileOutcome(tar.file_id, "tar_progress", tar.lease_token,
                                        bytes_done=0, etag='"v2"')),
               recorder.add(member(tar, a.file_id, 1024)),
               recorder.add(member(tar, b.file_id, 2048))]
    assert futures[0] is futures[1] is futures[2]  # one outcome, one commit
    await recorder.close()
    assert futures[0].result() is True
    files = {f.id: f for f in await repo.list_files(job_id)}
    assert (files[tar.file_id].etag, files[tar.file_id].bytes_done) == ('"v2"', 2048)
    assert files[a.file_id].state == files[b.file_id].state == "done"
    assert await counts(repo, job_id) == {"done": 2, "pending": 1}


async def test_reexport_keeps_the_tar_row_and_reattaches_members(repo: Repo) -> None:
    job_id, export_id = await ready_tar(repo)
    tar = await claim_tar(repo)
    [a, *_] = await repo.tar_members(tar.file_id)
    assert await repo.record_file_outcomes([member(tar, a.file_id, 1024)]) == [True]
    assert await repo.mark_export_expired(export_id, error="gone")
    assert await repo.record_file_outcomes([member(tar, a.file_id, 2048)]) == [False]  # fenced

    claim = await repo.claim_chunk_to_export("w0", max_pending_per_email=9)
    assert claim is not None
    new_tar = TAR.replace("JSOC_1", "JSOC_2")
    assert await repo.record_export_ready(claim.export_id, files=tar_files(new_tar),
                                          lease_token=claim.lease_token, request_id="JSOC_2",
                                          method="url-tar", protocol="fits") == 3
    again = await claim_tar(repo)
    assert again.file_id == tar.file_id and again.url == new_tar
    assert [m.name for m in await repo.tar_members(again.file_id)] == NAMES[1:]
    assert await counts(repo, job_id) == {"done": 1, "pending": 2}


@pytest.fixture
async def tar_url() -> AsyncIterator[Callable[[bytes], str]]:
    """Serve tars from 127.0.0.1: ``put(data)`` returns the URL of a new one."""
    tars: dict[str, bytes] = {}

    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=tars[request.path], headers={"ETag": '"1"'})

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]

    def put(data: bytes) -> str:
        path = f"/SUM1/D{len(tars)}/S00000/JSOC_1.tar"
        tars[path] = data
        return f"http://{host}:{port}{path}"
    yield put
    await runner.cleanup()


def make_tar(members: list[tuple[str, bytes]], link: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if link is not None:
            info = tarfile.TarInfo(link)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
    return buffer.getvalue()


@pytest.mark.parametrize("unsafe", [False, True])
async def test_a_lane_unpacks_the_tar_into_member_rows(
        repo: Repo, db_url: str, tmp_path: Path, tar_url: Callable[[bytes], str],
        unsafe: bool) -> None:
    names = ["a.txt", "b.txt", "c.txt"]
    data = {"a.txt": b"alpha\n", "b.txt": b"beta\n" * 300}
    url = tar_url(make_tar([*data.items(), ("index.json", b"{}")],
                           link="c.txt" if unsafe else None))
    job_id, _ = await ready_tar(repo, url, names)
    settings = make_settings(tmp_path, "http://127.0.0.1:9/", db_url)
    async with open_context(settings, repo, asyncio.Event(), "w1") as ctx:
        await download_file(ctx, await claim_tar(repo, urlsplit(url).netloc))
    files = {f.dest_path: f for f in await repo.list_files(job_id)}
    tar = files.pop("hmi.M_45s/JSOC_1.tar")
    root = settings.download_dir
    for name, body in data.items():
        digest = hashlib.sha256(body).hexdigest()
        assert files[f"out/{name}"].sha256 == digest == sha256(root / "out" / name)
    placed = sorted(f"out/{name}" for name in data)
    manifest = manifest_name(job_id)  # the job's manifest lists the members placed
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == \
        sorted([*placed, manifest])
    assert sorted(e["path"] for e in read_manifest(root / manifest)) == placed
    missing = files["out/c.txt"]
    assert missing.state == "failed" and tar.state == ("failed" if unsafe else "done")
    if unsafe:
        assert "tar member 'c.txt' refused: it is a symlink" in (missing.error or "")
        assert tar.error == missing.error
    else:
        assert missing.error == "not in the tar JSOC_1.tar"
    assert await counts(repo, job_id) == {"done": 2, "failed": 1}
