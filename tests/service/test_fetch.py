"""fetch_file against a real aiohttp server on 127.0.0.1 whose faults are exact (truncate after
N bytes, ignore Range, change the file, 503 + Retry-After)."""

from __future__ import annotations

import hashlib
import io
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from astropy.io import fits

from service.download import (
    FetchPermanentError,
    FetchRetryableError,
    FetchVerifyError,
    fetch_file,
    part_path,
)
from service.download.fetch import READ_BUFSIZE, place_part
from tests.service.stub_server import serving

MiB = 1 << 20
# aiohttp drops the bytes it buffered but had not handed over when a connection breaks; its
# flow control keeps that to a few x READ_BUFSIZE (observed 1-2 MiB). Resume re-fetches them.
MAX_DROPPED = 16 * READ_BUFSIZE


@dataclass
class Served:
    path: str
    range: str | None
    if_range: str | None
    status: int
    start: int = 0
    sent: int = 0


@dataclass
class FaultyFileServer:
    """Serves `files` with ETag/Last-Modified/Range; faults are set per path by tests."""

    files: dict[str, bytes] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    truncate_after: dict[str, int] = field(default_factory=dict)  # one-shot
    ignore_range: set[str] = field(default_factory=set)
    errors: dict[str, list[tuple[int, dict[str, str]]]] = field(default_factory=dict)
    log: list[Served] = field(default_factory=list)
    base_url: str = ""

    def put(self, path: str, data: bytes) -> None:
        self.files[path] = data
        self.versions[path] = self.versions.get(path, 0) + 1

    def etag(self, path: str) -> str:
        return f'"v{self.versions[path]}-{len(self.files[path])}"'

    def url(self, path: str) -> str:
        return self.base_url + path.lstrip("/")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        rec = Served(path, request.headers.get("Range"), request.headers.get("If-Range"), 0)
        self.log.append(rec)
        if self.errors.get(path):
            rec.status, headers = self.errors[path].pop(0)
            return web.Response(status=rec.status, headers=headers, text="simulated error")
        if path not in self.files:
            rec.status = 404
            return web.Response(status=404, text="no such file")
        data, etag = self.files[path], self.etag(path)
        start, status = 0, 200
        if rec.range and path not in self.ignore_range and rec.if_range in (None, etag):
            start, status = int(rec.range.removeprefix("bytes=").rstrip("-")), 206
            if start >= len(data):
                rec.status = 416
                return web.Response(status=416, headers={"Content-Range": f"bytes */{len(data)}"})
        rec.status, rec.start = status, start
        headers = {"ETag": etag, "Last-Modified": "Wed, 01 Jan 2025 00:00:00 GMT",
                   "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = len(data) - start
        await resp.prepare(request)
        limit = self.truncate_after.pop(path, None)
        body = data[start:] if limit is None else data[start:start + limit]
        for i in range(0, len(body), 256 * 1024):
            await resp.write(body[i:i + 256 * 1024])
            rec.sent += len(body[i:i + 256 * 1024])
        if limit is not None:
            assert request.transport is not None
            request.transport.close()  # clean FIN before Content-Length was reached
            return resp
        await resp.write_eof()
        return resp


@pytest.fixture
async def server() -> AsyncIterator[FaultyFileServer]:
    srv = FaultyFileServer()
    async with serving(srv.handle) as base_url:
        srv.base_url = base_url
        yield srv


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit_per_host=1)) as s:
        yield s


def payload(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def fits_bytes(shape: tuple[int, int] = (256, 300)) -> bytes:
    """A real two-HDU FITS file (image + binary table) written by astropy."""
    image = np.arange(shape[0] * shape[1], dtype=np.int16).reshape(shape)
    table = fits.BinTableHDU.from_columns([fits.Column("X", "E", array=np.arange(50.0))])
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(image), table]).writeto(buf)
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["thread", "inline"])
async def test_fresh_download(server: FaultyFileServer, session: aiohttp.ClientSession,
                              tmp_path: Path, mode: str) -> None:
    data = payload(3 * MiB + 123)
    server.put("/SUM1/D1/S0/a.bin", data)
    dest = tmp_path / "out" / "a.bin"
    result = await fetch_file(session, server.url("/SUM1/D1/S0/a.bin"), dest,
                              expected_size=len(data), write_mode=mode, chunk_size=MiB)
    assert dest.read_bytes() == data
    assert not part_path(dest).exists()
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert (result.size, result.resumed_from, result.restarts) == (len(data), 0, 0)
    assert result.validator == server.etag("/SUM1/D1/S0/a.bin")
    assert [r.range for r in server.log] == [None]


async def test_resume_after_truncation_requests_only_the_rest(
        server: FaultyFileServer, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    data = payload(16 * MiB)
    server.put("/f.bin", data)
    server.truncate_after["/f.bin"] = 12 * MiB
    dest = tmp_path / "f.bin"
    stored: list[str | None] = []

    async def remember(validator: str | None) -> None:
        stored.append(validator)

    with pytest.raises(FetchRetryableError) as info:
        await fetch_file(session, server.url("/f.bin"), dest, on_validator=remember)
    err = info.value
    assert err.retryable and 0 < err.bytes_done <= 12 * MiB
    assert part_path(dest).stat().st_size == err.bytes_done and not dest.exists()
    assert stored == [server.etag("/f.bin")] == [err.validator]

    result = await fetch_file(session, server.url("/f.bin"), dest, etag=stored[0])
    assert dest.read_bytes() == data
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert result.resumed_from == err.bytes_done and result.restarts == 0
    first, second = server.log
    assert (second.status, second.range, second.if_range) == (
        206, f"bytes={err.bytes_done}-", stored[0])
    assert second.sent == len(data) - err.bytes_done
    assert first.sent - err.bytes_done <= MAX_DROPPED  # only that is transferred twice


async def test_small_body_held_in_memory_until_placed(
        server: FaultyFileServer, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    """place=False: a small fresh body is returned, nothing written until place_part."""
    data = fits_bytes((64, 64))
    server.put("/s.fits", data)
    dest = tmp_path / "s.fits"
    result = await fetch_file(session, server.url("/s.fits"), dest, place=False)
    assert result.body == data and result.size == len(data)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert not part_path(dest).exists() and not dest.exists()
    assert place_part(result.path, dest, expected_size=len(data), body=result.body) == len(data)
    assert dest.read_bytes() == data and not part_path(dest).exists()


async def test_held_body_failing_verification_leaves_nothing(
        server: FaultyFileServer, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    good = fits_bytes((64, 64))
    server.put("/t.fits", good[:-2880])  # last data block lost, still block-aligned
    dest = tmp_path / "t.fits"
    result = await fetch_file(session, server.url("/t.fits"), dest, place=False)
    with pytest.raises(FetchVerifyError, match="truncated"):
        place_part(result.path, dest, expected_size=None, body=result.body)
    assert not dest.exists() and not part_path(dest).exists()


async def test_held_body_cut_off_is_written_for_resume(
        server: FaultyFileServer, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    data = payload(300_000)
    server.put("/u.bin", data)
    server.truncate_after["/u.bin"] = 100_000
    dest = tmp_path / "u.bin"
    with pytest.raises(FetchRetryableError) as info:
        await fetch_file(session, server.url("/u.bin"), dest, place=False)
    assert info.value.bytes_done == 100_000
    assert part_path(dest).read_bytes() == data[:100_000]
    result = await fetch_file(session, server.url("/u.bin"), dest, etag=info.value.validator,
                              place=False)
    assert result.body is None and result.resumed_from == 100_000  # appended to the part
    assert part_path(dest).read_bytes() == data
    assert result.sha256 == hashlib.sha256(data).hexdigest()


async def test_held_body_of_a_restart_never_leaves_the_old_part(
        server: FaultyFileServer, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    """A server ignoring Range restarts the body; while the new one is held in memory the
    old part must be gone (resuming from it after a crash would mix two versions)."""
    data = payload(200_000)
    server.put("/v.bin", data)
    server.ignore_range.add("/v.bin")
    dest = tmp_path / "v.bin"
    part_path(dest).write_bytes(payload(50_000, seed=7))
    result = await fetch_file(session, server.url("/v.bin"), dest, etag=server.etag("/v.bin"),
                              place=False)
    assert result.body == data and result.restarts == 1
    assert not part_path(dest).exists()


async def test_server_ignoring_range_restarts_from_zero(
        server: FaultyFileServer, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    data = payload(2 * MiB)
    server.put("/g.bin", data)
    dest = tmp_path / "g.bin"
    part_path(dest).write_bytes(data[:MiB])
    server.ignore_range.add("/g.bin")
    result = await fetch_file(session, server.url("/g.bin"), dest, etag=server.etag("/g.bin"))
    assert dest.read_bytes() == data
    assert result.restarts == 1 and result.resumed_from == 0
    assert server.log[0].range == f"bytes={MiB}-" and server.log[0].status == 200


async def test_changed_file_fails_if_range_and_restarts(
        server: FaultyFileServer, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    old, new = payload(2 * MiB, seed=1), payload(2 * MiB + 10, seed=2)
    server.put("/h.bin", old)
    server.truncate_after["/h.bin"] = MiB
    dest = tmp_path / "h.bin"
    with pytest.raises(FetchRetryableError) as info:
        await fetch_file(session, server.url("/h.bin"), dest)
    server.put("/h.bin", new)  # new content, new ETag
    result = await fetch_file(session, server.url("/h.bin"), dest, etag=info.value.validator)
    assert dest.read_bytes() == new
    assert result.restarts == 1 and result.validator == server.etag("/h.bin")
    assert result.sha256 == hashlib.sha256(new).hexdigest()
    assert server.log[-1].if_range == info.value.validator and server.log[-1].status == 200


async def test_416_with_oversized_part_restarts(
        server: FaultyFileServer, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    data = payload(MiB)
    server.put("/i.bin", data)
    dest = tmp_path / "i.bin"
    part_path(dest).write_bytes(payload(MiB + 500, seed=9))
    result = await fetch_file(session, server.url("/i.bin"), dest, etag=server.etag("/i.bin"))
    assert dest.read_bytes() == data and result.restarts == 1
    assert [r.status for r in server.log] == [416, 200]
    assert server.log[1].range is None


async def test_416_with_complete_part_finishes_without_body(
        server: FaultyFileServer, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    data = payload(MiB, seed=3)
    server.put("/j.bin", data)
    dest = tmp_path / "j.bin"
    part_path(dest).write_bytes(data)
    result = await fetch_file(session, server.url("/j.bin"), dest, etag=server.etag("/j.bin"))
    assert dest.read_bytes() == data and result.bytes_received == 0
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert [r.status for r in server.log] == [416]


async def test_part_without_validator_is_not_trusted(
        server: FaultyFileServer, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    data = payload(MiB, seed=4)
    server.put("/k.bin", data)
    dest = tmp_path / "k.bin"
    part_path(dest).write_bytes(b"x" * 1000)
    await fetch_file(session, server.url("/k.bin"), dest)
    assert dest.read_bytes() == data and server.log[0].range is None


async def test_size_mismatch_is_detected_and_nothing_is_kept(
        server: FaultyFileServer, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    data = payload(100_000)
    server.put("/l.bin", data)
    dest = tmp_path / "l.bin"
    with pytest.raises(FetchVerifyError, match=f"{len(data)} bytes, expected {len(data) + 1}"):
        await fetch_file(session, server.url("/l.bin"), dest, expected_size=len(data) + 1)
    assert not dest.exists() and not part_path(dest).exists()


async def test_fits_verification_rejects_corrupted_file_before_rename(
        server: FaultyFileServer, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    good = fits_bytes()
    server.put("/good.fits", good)
    server.put("/bad.fits", good[:-2880])  # last data block lost, still block-aligned
    result = await fetch_file(session, server.url("/good.fits"), tmp_path / "good.fits")
    assert result.size == len(good)
    with pytest.raises(FetchVerifyError, match="truncated"):
        await fetch_file(session, server.url("/bad.fits"), tmp_path / "bad.fits")
    assert not (tmp_path / "bad.fits").exists()
    assert not part_path(tmp_path / "bad.fits").exists()


async def test_progress_is_throttled_and_final_file_appears_only_at_the_end(
        server: FaultyFileServer, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    data = payload(5 * MiB + 7)
    server.put("/m.bin", data)
    dest = tmp_path / "m.bin"
    seen: list[tuple[int, bool, bool]] = []

    async def progress(done: int) -> None:
        seen.append((done, dest.exists(), part_path(dest).exists()))

    await fetch_file(session, server.url("/m.bin"), dest, on_progress=progress,
                     chunk_size=256 * 1024, progress_bytes=MiB, progress_seconds=3600)
    values = [s[0] for s in seen]
    assert values[-1] == len(data) and values == sorted(values)
    assert all(b - a >= MiB for a, b in zip([0, *values[:-2]], values[:-1], strict=True))
    assert len(values) <= len(data) // MiB + 1
    # Every report, the last included, comes while only the part exists: the last one is the
    # caller's chance to refuse the rename (a lost lease); the final name appears after it.
    assert all(not final and part for _, final, part in seen)
    assert dest.exists() and not part_path(dest).exists()


async def test_refused_final_progress_leaves_no_final_file(
        server: FaultyFileServer, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    data = payload(3 * MiB)
    server.put("/f.bin", data)
    dest = tmp_path / "f.bin"

    class LeaseGone(Exception):
        pass

    async def progress(done: int) -> None:
        if done == len(data):
            raise LeaseGone  # another worker holds the file now

    with pytest.raises(LeaseGone):
        await fetch_file(session, server.url("/f.bin"), dest, on_progress=progress)
    assert not dest.exists()
    assert part_path(dest).stat().st_size == len(data)  # the new owner may resume it


async def test_http_errors_are_classified(
        server: FaultyFileServer, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    server.put("/n.bin", b"abc")
    server.errors["/n.bin"] = [(503, {"Retry-After": "7"})]
    with pytest.raises(FetchRetryableError) as info:
        await fetch_file(session, server.url("/n.bin"), tmp_path / "n.bin")
    assert (info.value.http_status, info.value.retry_after) == (503, 7.0)
    with pytest.raises(FetchPermanentError) as missing:
        await fetch_file(session, server.url("/nothing.bin"), tmp_path / "x.bin")
    assert missing.value.http_status == 404 and not missing.value.retryable
    await fetch_file(session, server.url("/n.bin"), tmp_path / "n.bin")  # error was one-shot
    assert (tmp_path / "n.bin").read_bytes() == b"abc"


async def test_connection_refused_is_retryable(session: aiohttp.ClientSession,
                                               tmp_path: Path) -> None:
    runner = web.AppRunner(web.Application())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    await runner.cleanup()  # nothing listens on the port any more
    with pytest.raises(FetchRetryableError, match="interrupted"):
        await fetch_file(session, f"http://127.0.0.1:{port}/x", tmp_path / "x")


# -- against the jsocsim emulator's file server -------------------------------------------------


async def _quick_file(emu: object, session: aiohttp.ClientSession) -> tuple[str, str]:
    """URL and name of one as-is file of a quick export."""
    from service.jsoc.client import JsocClient

    async with JsocClient(emu.base_url, session=session) as jsoc:  # type: ignore[attr-defined]
        reply = await jsoc.exp_request("hmi.M_45s[2014.01.01_00:00_TAI/45s]{magnetogram}",
                                       "a@b.org", "url_quick", "as-is")
        (item,) = jsoc.export_items(reply)
    return item.url, item.filename


async def test_resume_against_jsocsim_counts_little_twice(tmp_path: Path) -> None:
    from urllib.parse import urlsplit

    from jsocsim import run_emulator

    async with run_emulator(tmp_path / "jsoc", emails=["a@b.org"], file_size=12 * MiB) as emu, \
            aiohttp.ClientSession() as session:
        url, name = await _quick_file(emu, session)
        emu.set_faults(truncate_rate=1.0, truncate_fraction=0.5)
        with pytest.raises(FetchRetryableError) as info:
            await fetch_file(session, url, tmp_path / name)
        emu.set_faults(truncate_rate=0.0, ignore_range_rate=0.0)
        result = await fetch_file(session, url, tmp_path / name, etag=info.value.validator)
        path = urlsplit(url).path
        served = emu.manifest()[path]
        stats = emu.stats()["files"][path]
    assert (result.size, result.sha256) == (served["size"], served["sha256"])
    assert result.resumed_from == info.value.bytes_done > 0 and result.restarts == 0
    assert stats["bytes_served"] - served["size"] == stats["bytes_served_again"]
    # A clean early close (FIN) loses nothing: what aiohttp had buffered is kept too.
    assert stats["bytes_served_again"] == 0
    assert stats["full_downloads"] == 0 and stats["requests"] == 2


async def test_truncated_burst_keeps_every_byte_received(tmp_path: Path) -> None:
    """A small truncated body arrives whole before the client reads it; aiohttp then raises
    without handing it over. The part file must still hold all of it."""
    from urllib.parse import urlsplit

    from jsocsim import run_emulator

    async with run_emulator(tmp_path / "jsoc", emails=["a@b.org"], file_size=256 * 1024) as emu, \
            aiohttp.ClientSession() as session:
        url, name = await _quick_file(emu, session)
        emu.set_faults(truncate_rate=1.0, truncate_fraction=0.5)
        validator = None
        for _ in range(3):  # several bursts, each resumed from where the last ended
            with pytest.raises(FetchRetryableError) as info:
                await fetch_file(session, url, tmp_path / name, etag=validator)
            validator = info.value.validator
            sent = emu.stats()["files"][urlsplit(url).path]["bytes_served"]
            assert info.value.bytes_done == sent > 0
            assert (tmp_path / f"{name}.part").stat().st_size == sent


async def test_ignored_range_against_jsocsim_restarts(tmp_path: Path) -> None:
    from urllib.parse import urlsplit

    from jsocsim import run_emulator

    async with run_emulator(tmp_path / "jsoc", emails=["a@b.org"], file_size=MiB) as emu, \
            aiohttp.ClientSession() as session:
        url, name = await _quick_file(emu, session)
        emu.set_faults(truncate_rate=1.0, truncate_fraction=0.5)
        with pytest.raises(FetchRetryableError) as info:
            await fetch_file(session, url, tmp_path / name)
        emu.set_faults(truncate_rate=0.0, ignore_range_rate=1.0)
        result = await fetch_file(session, url, tmp_path / name, etag=info.value.validator)
        served = emu.manifest()[urlsplit(url).path]
    assert result.restarts == 1 and result.resumed_from == 0
    assert (result.size, result.sha256) == (served["size"], served["sha256"])
