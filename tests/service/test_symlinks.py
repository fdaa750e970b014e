"""A symlink planted where a file or its ``.part`` belongs is never followed: the download
fails with an error naming it and nothing is written outside the download root (issue 11,
point 2); a malformed response is a counted transfer error (point 6). Real HTTP on
127.0.0.1, real files and links."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from service.download.fetch import FetchRetryableError, fetch_file
from service.download.paths import SymlinkError, UnsafePathError, safe_join
from service.download.untar import UnsafeMemberError, unpack_tar
from tests.service.stub_server import serving
from tests.service.tar_files import fits_bytes, make_tar

BODY = fits_bytes(7)
TAR = make_tar([("a.fits", fits_bytes(1)), ("b.fits", fits_bytes(2))])


async def handler(request: web.Request) -> web.Response:
    data = TAR if request.path.endswith(".tar") else BODY
    return web.Response(body=data, headers={"ETag": '"v1"'})


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    async with serving(handler) as url:
        yield url


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def plant(tmp_path: Path, link: Path, *, content: bytes = b"") -> Path:
    """A symlink at ``link`` to a file outside the root (with ``content``); returns it."""
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    target = outside / f"{link.name}.target"
    target.write_bytes(content)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)
    return target


@pytest.mark.parametrize("etag", [None, '"v1"'])  # a fresh download and a resumed one
async def test_part_symlink_is_refused_naming_it(base_url: str, session: aiohttp.ClientSession,
                                                 tmp_path: Path, etag: str | None) -> None:
    root = tmp_path / "root"
    root.mkdir()
    dest = safe_join(root, "x/image.fits")
    target = plant(tmp_path, dest.with_name("image.fits.part"), content=b"keep me")
    with pytest.raises(SymlinkError, match=r"image\.fits\.part.* is a symlink"):
        await fetch_file(session, f"{base_url}f/image.fits", dest, etag=etag)
    assert target.read_bytes() == b"keep me"  # nothing written through the link
    assert not dest.exists()


@pytest.mark.unit
async def test_destination_symlink_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    plant(tmp_path, root / "x" / "image.fits")
    with pytest.raises(UnsafePathError, match="symlink"):
        safe_join(root, "x/image.fits")


async def test_tar_member_part_symlink_fails_the_tar(base_url: str,
                                                     session: aiohttp.ClientSession,
                                                     tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    target = plant(tmp_path, root / "m" / "b.fits.part", content=b"keep me")
    with pytest.raises(UnsafeMemberError, match=r"b\.fits\.part.* is a symlink"):
        await unpack_tar(session, f"{base_url}x.tar", root, lambda name: f"m/{name}")
    assert target.read_bytes() == b"keep me"
    assert not (root / "m" / "b.fits").exists()


async def test_malformed_content_length_is_a_retryable_fetch_error(
        session: aiohttp.ClientSession, tmp_path: Path) -> None:
    """A negative Content-Length is a transfer error the retry policy counts (issue 11,
    point 6), not an unexpected exception."""
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nabc")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        with pytest.raises(FetchRetryableError, match=r"127\.0\.0\.1"):
            await fetch_file(session, f"http://127.0.0.1:{port}/f.fits", tmp_path / "f.fits")
