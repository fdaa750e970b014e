"""unpack_tar against a real aiohttp server on 127.0.0.1 serving tars built with `tarfile`
(ustar, GNU and PAX long names) with exact faults (cut after N bytes, ignored Range), and
against the jsocsim emulator's url-tar export."""

from __future__ import annotations

import asyncio
import hashlib
import io
import tarfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from jsocsim import run_emulator
from service.download import FetchPermanentError, FetchRetryableError, FetchVerifyError
from service.download.tarstream import meta_record, parse_header, parse_number
from service.download.untar import MemberResult, UnsafeMemberError, unpack_tar
from service.jsoc.client import JsocClient
from service.jsoc.status import StatusKind
from tests.service.stub_server import serving
from tests.service.tar_files import fits_bytes, make_tar

EMAIL = "a@b.org"
LONG = "deep/" + "x" * 120 + "/name_longer_than_a_hundred_bytes.txt"


def sample_members(n: int = 6) -> list[tuple[str, bytes]]:
    """FITS and odd-sized text members (sizes not multiples of 512), one of them empty."""
    out: list[tuple[str, bytes]] = []
    for i in range(n):
        if i % 2 == 0:
            out.append((f"hmi.m_45s.{i}.magnetogram.fits", fits_bytes(i)))
        else:
            out.append((f"notes/record_{i}.txt", bytes([65 + i]) * (700 * i + 13)))
    return [*out, ("empty.txt", b"")]


def boundaries(tar_data: bytes) -> dict[str, int]:
    """Member name -> tar offset after its padded data (what end_offset must say)."""
    with tarfile.open(fileobj=io.BytesIO(tar_data)) as tar:
        return {m.name: m.offset_data + -(-m.size // 512) * 512 for m in tar.getmembers()}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class TarServer:
    """Serves tars with ETag/Range/If-Range; `cut_after` (one-shot) closes the connection after
    that many body bytes; `ignore_range` answers 200 to every Range request."""

    files: dict[str, bytes] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    cut_after: dict[str, int] = field(default_factory=dict)
    ignore_range: set[str] = field(default_factory=set)
    log: list[tuple[str | None, int]] = field(default_factory=list)  # (Range, status)
    base_url: str = ""

    def put(self, path: str, data: bytes) -> str:
        self.files[path] = data
        self.versions[path] = self.versions.get(path, 0) + 1
        return self.base_url + path.lstrip("/")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path, rng = request.path, request.headers.get("Range")
        if path not in self.files:
            self.log.append((rng, 404))
            return web.Response(status=404, text="no such file")
        data = self.files[path]
        etag = f'"v{self.versions[path]}-{len(data)}"'
        start, status = 0, 200
        if rng and path not in self.ignore_range and request.headers.get("If-Range") == etag:
            start, status = int(rng.removeprefix("bytes=").rstrip("-")), 206
        self.log.append((rng, status))
        headers = {"ETag": etag, "Accept-Ranges": "bytes"}
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = len(data) - start
        await resp.prepare(request)
        limit = self.cut_after.pop(path, None)
        await resp.write(data[start:] if limit is None else data[start:start + limit])
        if limit is not None:
            assert request.transport is not None
            request.transport.close()  # FIN before Content-Length was reached
            return resp
        await resp.write_eof()
        return resp


@pytest.fixture
async def server() -> AsyncIterator[TarServer]:
    srv = TarServer()
    async with serving(srv.handle) as base_url:
        srv.base_url = base_url
        yield srv


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def same_name(name: str) -> str:
    return name


class Recorder:
    """An on_member callback that keeps what it was told."""

    def __init__(self) -> None:
        self.seen: list[MemberResult] = []

    async def __call__(self, result: MemberResult) -> None:
        assert result.path.is_file() and not result.path.with_name(
            result.path.name + ".part").exists()  # reported only once in place
        self.seen.append(result)


def assert_tree(root: Path, members: list[tuple[str, bytes]]) -> None:
    """Exactly these files under root, with these bytes, and no .part left over."""
    files = {p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file()}
    assert sorted(files) == sorted(name for name, _ in members)
    for name, data in members:
        assert sha(files[name].read_bytes()) == sha(data), name


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
async def test_every_member_placed_with_sha256_and_boundaries(
        server: TarServer, session: aiohttp.ClientSession, tmp_path: Path, fmt: int) -> None:
    members = sample_members()
    if fmt != tarfile.USTAR_FORMAT:  # long names: GNU `L` records / PAX `path`
        members += [(LONG, b"long name\n"), ("ünïcode/名前.txt", b"utf-8 name\n")]
    data = make_tar(members, fmt)
    url = server.put("/exp/JSOC_1.tar", data)
    rec = Recorder()
    result = await unpack_tar(session, url, tmp_path / "out", same_name, on_member=rec)
    assert_tree(tmp_path / "out", members)
    ends = boundaries(data)
    assert [(r.name, r.size, r.sha256, r.end_offset) for r in rec.seen] == [
        (name, len(body), sha(body), ends[name]) for name, body in members]
    assert result.members == rec.seen and result.skipped == [] and result.restarts == 0
    assert result.validator == f'"v1-{len(data)}"' and result.resumed_from == 0
    assert result.end_offset == ends[members[-1][0]] + 512 <= len(data)


async def test_place_maps_and_skips_members(server: TarServer, session: aiohttp.ClientSession,
                                            tmp_path: Path) -> None:
    members = sample_members(4)
    index = [("index.json", b"{}"), ("index.txt", b"# JSOC Export Index\n")]
    dot = tarfile.TarInfo("./")  # `tar c ./` puts the directory itself first
    dot.type = tarfile.DIRTYPE
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(dot)
        for name, body in index + members:
            info = tarfile.TarInfo("./" + name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    url = server.put("/exp/jsoc.tar", buffer.getvalue())

    def place(name: str) -> str | None:
        return None if name.startswith("index.") else f"2014/01/{name.replace('/', '_')}"

    result = await unpack_tar(session, url, tmp_path, place)
    assert result.skipped == ["index.json", "index.txt"]
    assert [r.name for r in result.members] == [name for name, _ in members]
    assert_tree(tmp_path, [(place(name) or "", body) for name, body in members])


def evil_extra(kind: str) -> tuple[list[tuple[str, bytes]], list[tarfile.TarInfo]]:
    if kind == "symlink":
        link = tarfile.TarInfo("innocent.fits")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        return [], [link]
    if kind == "hardlink":
        link = tarfile.TarInfo("hard.fits")
        link.type, link.linkname = tarfile.LNKTYPE, "a.txt"
        return [], [link]
    name = {"dotdot": "../escaped.txt", "absolute": "/tmp/escaped.txt",
            "inner_dotdot": "a/../../escaped.txt"}[kind]
    return [(name, b"evil")], []


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "inner_dotdot", "symlink", "hardlink"])
async def test_unsafe_member_is_refused(server: TarServer, session: aiohttp.ClientSession,
                                        tmp_path: Path, kind: str) -> None:
    evil, extra = evil_extra(kind)
    data = make_tar([("a.txt", b"fine"), *evil], tarfile.GNU_FORMAT, extra)
    url = server.put("/exp/evil.tar", data)
    root = tmp_path / "jail" / "root"
    rec = Recorder()
    with pytest.raises(UnsafeMemberError) as caught:
        await unpack_tar(session, url, root, same_name, on_member=rec)
    assert isinstance(caught.value, FetchPermanentError) and not caught.value.retryable
    name = (evil or [(extra[0].name, b"")])[0][0]
    assert repr(name) in str(caught.value) or repr(name.lstrip("/")) in str(caught.value)
    assert [r.name for r in rec.seen] == ["a.txt"]  # placed before the bad member
    assert caught.value.bytes_done == boundaries(data)["a.txt"]
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and root not in p.parents]
    assert outside == [] and not Path("/tmp/escaped.txt").exists()
    assert sorted(p.name for p in root.rglob("*")) == ["a.txt"]


async def test_place_result_cannot_escape_root(server: TarServer,
                                               session: aiohttp.ClientSession,
                                               tmp_path: Path) -> None:
    url = server.put("/exp/t.tar", make_tar([("a.fits", fits_bytes(1))]))
    root = tmp_path / "root"
    with pytest.raises(UnsafeMemberError, match=r"tar member 'a.fits'.*'\.\.'"):
        await unpack_tar(session, url, root, lambda name: f"../{name}")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("chunk_size", [1 << 20, 4096])  # members of one / many batches
async def test_cut_mid_member_then_resume(server: TarServer, session: aiohttp.ClientSession,
                                          tmp_path: Path, chunk_size: int) -> None:
    members = sample_members(8)
    members[4] = ("big/cut_here.bin", bytes(range(256)) * 12_000)  # ~3 MB
    data = make_tar(members, tarfile.PAX_FORMAT)
    ends = boundaries(data)
    url = server.put("/exp/cut.tar", data)
    cut_in = members[4][0]  # cut in the middle of the fifth member's data
    server.cut_after["/exp/cut.tar"] = ends[members[3][0]] + 512 + 2_000_000
    first = Recorder()
    with pytest.raises(FetchRetryableError) as caught:
        await unpack_tar(session, url, tmp_path, same_name, on_member=first,
                         chunk_size=chunk_size)
    err = caught.value
    assert err.bytes_done == ends[members[3][0]] and err.validator is not None
    assert [r.name for r in first.seen] == [name for name, _ in members[:4]]
    assert_tree(tmp_path, members[:4])  # no final file and no .part for the cut member
    assert not (tmp_path / cut_in).exists()
    before = {r.name: r.path.stat() for r in first.seen}

    second = Recorder()
    result = await unpack_tar(session, url, tmp_path, same_name, start_offset=err.bytes_done,
                              validator=err.validator, on_member=second, chunk_size=chunk_size)
    assert server.log[-1] == (f"bytes={err.bytes_done}-", 206)
    assert result.resumed_from == err.bytes_done and result.restarts == 0
    assert [r.name for r in second.seen] == [name for name, _ in members[4:]]
    assert_tree(tmp_path, members)
    for name, stat in before.items():  # not rewritten on resume
        now = (tmp_path / name).stat()
        assert (now.st_ino, now.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)


async def test_duplicate_member_replaces_and_failing_callback_stops(
        server: TarServer, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    members = [("a.txt", b"first"), ("a.txt", b"second version"), ("b.txt", b"b"),
               ("c.txt", b"c")]
    url = server.put("/exp/dup.tar", make_tar(members))
    result = await unpack_tar(session, url, tmp_path / "one", same_name)
    assert [r.name for r in result.members] == ["a.txt", "a.txt", "b.txt", "c.txt"]
    assert_tree(tmp_path / "one", members[1:])

    async def lease_lost(result: MemberResult) -> None:  # e.g. fencing in the download stage
        if result.name == "b.txt":
            raise RuntimeError("lease lost")

    with pytest.raises(RuntimeError, match="lease lost"):
        await unpack_tar(session, url, tmp_path / "two", same_name, on_member=lease_lost)
    assert not list((tmp_path / "two").glob("*.part"))
    assert not (tmp_path / "two" / "c.txt").exists()


async def test_cut_inside_a_header_and_resume_from_boundary(
        server: TarServer, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    members = sample_members(3)
    data = make_tar(members)
    ends = boundaries(data)
    url = server.put("/exp/h.tar", data)
    server.cut_after["/exp/h.tar"] = ends[members[1][0]] + 100
    with pytest.raises(FetchRetryableError) as caught:
        await unpack_tar(session, url, tmp_path, same_name)
    assert caught.value.bytes_done == ends[members[1][0]]
    result = await unpack_tar(session, url, tmp_path, same_name,
                              start_offset=caught.value.bytes_done,
                              validator=caught.value.validator)
    assert [r.name for r in result.members] == [name for name, _ in members[2:]]
    assert_tree(tmp_path, members)


@pytest.mark.parametrize("why", ["ignored_range", "changed_file", "no_validator"])
async def test_resume_answered_200_restarts_cleanly(
        server: TarServer, session: aiohttp.ClientSession, tmp_path: Path, why: str) -> None:
    members = sample_members(5)
    data = make_tar(members)
    url = server.put("/exp/r.tar", data)
    server.cut_after["/exp/r.tar"] = boundaries(data)[members[2][0]] + 600
    with pytest.raises(FetchRetryableError) as caught:
        await unpack_tar(session, url, tmp_path, same_name)
    validator = caught.value.validator
    if why == "ignored_range":
        server.ignore_range.add("/exp/r.tar")
    elif why == "changed_file":
        members[0] = (members[0][0], fits_bytes(99))
        data = make_tar(members)
        server.put("/exp/r.tar", data)
    else:
        validator = None
    stale = tmp_path / (members[3][0] + ".part")
    stale.write_bytes(b"left by a crash")
    told: list[str | None] = []

    async def on_validator(value: str | None) -> None:
        told.append(value)

    result = await unpack_tar(session, url, tmp_path, same_name,
                              start_offset=caught.value.bytes_done, validator=validator,
                              on_validator=on_validator)
    assert [r.name for r in result.members] == [name for name, _ in members]
    assert result.resumed_from == 0 and told == [result.validator]
    assert result.restarts == (0 if why == "no_validator" else 1)
    assert_tree(tmp_path, members)


async def test_resume_offset_not_on_a_header_restarts(
        server: TarServer, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    members = sample_members(3)
    data = make_tar(members)
    url = server.put("/exp/o.tar", data)
    etag = f'"v1-{len(data)}"'
    result = await unpack_tar(session, url, tmp_path, same_name, start_offset=1024,
                              validator=etag)  # inside the first member's data
    assert result.restarts == 1 and len(result.members) == len(members)
    assert_tree(tmp_path, members)


async def test_resume_at_end_of_archive_places_nothing(
        server: TarServer, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    members = sample_members(2)
    data = make_tar(members)
    url = server.put("/exp/e.tar", data)
    done = await unpack_tar(session, url, tmp_path, same_name)
    again = await unpack_tar(session, url, tmp_path, same_name,
                             start_offset=done.members[-1].end_offset,
                             validator=done.validator)
    assert again.members == [] and again.end_offset == done.end_offset


async def test_corrupt_fits_member_fails_verification(
        server: TarServer, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    good = fits_bytes(1)
    members = [("a.fits", good), ("b.fits", good[:2880]), ("c.fits", good)]  # b: data cut off
    data = make_tar(members)
    url = server.put("/exp/bad.tar", data)
    with pytest.raises(FetchVerifyError, match=r"'b.fits'.*truncated") as caught:
        await unpack_tar(session, url, tmp_path, same_name)
    assert caught.value.bytes_done == boundaries(data)["a.fits"]
    assert_tree(tmp_path, members[:1])


async def test_http_errors_map_to_fetch_errors(server: TarServer,
                                               session: aiohttp.ClientSession,
                                               tmp_path: Path) -> None:
    with pytest.raises(FetchPermanentError, match="HTTP 404"):
        await unpack_tar(session, server.base_url + "missing.tar", tmp_path, same_name)
    url = server.put("/exp/junk.tar", b"this is not a tar archive " * 40)
    with pytest.raises(FetchVerifyError, match="no tar header at byte 0"):
        await unpack_tar(session, url, tmp_path, same_name)


@pytest.mark.unit
def test_header_numbers_gnu_base256_and_pax_size() -> None:
    info = tarfile.TarInfo("huge.bin")
    info.size = 1 << 34  # beyond the 11 octal digits: base-256 (GNU) or a PAX record
    gnu = info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")
    assert gnu[124] == 0x80 and parse_header(gnu[:512], 0).size == 1 << 34
    assert parse_number(b"\xff" + b"\xff" * 10 + b"\xfe") == -2
    assert parse_number(b"0000644\0") == 0o644 and parse_number(b"\0" * 8) == 0
    pax = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    header = parse_header(pax[:512], 0)
    assert header.kind == b"x"
    assert meta_record(b"x", pax[512:512 + header.size]) == {"size": str(1 << 34)}


async def test_emulator_url_tar_export_unpacks_to_manifest(
        session: aiohttp.ClientSession, tmp_path: Path) -> None:
    """A real url-tar export, cut once by the emulator's truncate fault, then resumed."""
    recordset = "hmi.sharp_720s[4864][2014.11.30_00:00_TAI/1h]{continuum,magnetogram}"
    async with run_emulator(tmp_path / "jsoc", emails=[EMAIL], staging_delay=0.1,
                            max_export_mb=10_000) as emu, JsocClient(emu.base_url) as jsoc:
        reply = await jsoc.exp_request(recordset, EMAIL, method="url-tar", protocol="fits")
        deadline = time.monotonic() + 20
        while reply.kind is StatusKind.PENDING and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            reply = await jsoc.exp_status(reply.request_id or "")
        assert reply.status == 0 and reply.tarfile == f"{reply.dir}/{reply.request_id}.tar"
        url = jsoc.file_url(reply.tarfile)

        def place(name: str) -> str:
            return f"meta/{name}" if name.startswith("index.") else f"data/{name}"

        emu.set_faults(truncate_rate=1.0, truncate_fraction=0.6)
        with pytest.raises(FetchRetryableError) as caught:
            await unpack_tar(session, url, tmp_path / "out", place)
        emu.set_faults(truncate_rate=0.0)
        resumed = await unpack_tar(session, url, tmp_path / "out", place,
                                   start_offset=caught.value.bytes_done,
                                   validator=caught.value.validator)
        tar_data = await (await session.get(url)).read()
        manifest = emu.manifest()
    assert manifest[reply.tarfile]["sha256"] == sha(tar_data)
    assert resumed.resumed_from == caught.value.bytes_done > 0 and resumed.restarts == 0
    with tarfile.open(fileobj=io.BytesIO(tar_data)) as tar:
        expected = {m.name: sha(tar.extractfile(m).read())  # type: ignore[union-attr]
                    for m in tar.getmembers()}
    index = {"index.json", "index.txt", "index.html"}
    assert len(reply.data) == 10  # 5 records x 2 segments; the tar adds the index files
    assert {row.filename for row in reply.data} | index == set(expected)
    for name, digest in expected.items():
        path = tmp_path / "out" / place(name)
        assert sha(path.read_bytes()) == digest, name
        if name in index:
            assert digest == manifest[f"{reply.dir}/{name}"]["sha256"]
    assert {r.name for r in resumed.members} < set(expected)
    assert not list((tmp_path / "out").rglob("*.part"))
