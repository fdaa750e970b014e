"""File serving: Range/ETag/If-Range/Last-Modified, the one-connection policy and byte stats."""

from __future__ import annotations

import asyncio
import hashlib
import socket
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest

from jsocsim.server import run_emulator
from tests.emulator.helpers import DEFAULT_OPTIONS, EMAIL, segment_paths, settled, wait_for

pytestmark = pytest.mark.emulator(**DEFAULT_OPTIONS)


async def test_full_download_headers_and_manifest(emu) -> None:
    async with aiohttp.ClientSession() as session:
        path = (await segment_paths(emu.base_url, session))[0]
        async with session.get(emu.base_url + path.lstrip("/")) as resp:
            body = await resp.read()
            assert resp.status == 200
            assert resp.headers["ETag"] and resp.headers["Last-Modified"]
            assert resp.headers["Accept-Ranges"] == "bytes"
            assert int(resp.headers["Content-Length"]) == len(body)
    await settled(emu)
    entry = emu.manifest()[path]
    assert entry["size"] == len(body) and entry["sha256"] == hashlib.sha256(body).hexdigest()
    stats = emu.stats()
    assert stats["files"][path] == {"requests": 1, "bytes_served": len(body),
                                    "bytes_served_again": 0, "full_downloads": 1}
    client = stats["clients"]["127.0.0.1"]
    assert client["bytes_served"] == len(body) and client["peak_concurrent_downloads"] == 1


async def test_range_if_range_and_416(emu) -> None:
    async with aiohttp.ClientSession() as session:
        url = emu.base_url + (await segment_paths(emu.base_url, session))[0].lstrip("/")
        async with session.get(url) as resp:
            full, etag, modified = await resp.read(), resp.headers["ETag"], resp.headers[
                "Last-Modified"]
        size = len(full)
        async with session.get(url, headers={"Range": "bytes=100-"}) as resp:
            assert resp.status == 206
            assert resp.headers["Content-Range"] == f"bytes 100-{size - 1}/{size}"
            assert await resp.read() == full[100:]
        async with session.get(url, headers={"Range": "bytes=10-", "If-Range": etag}) as resp:
            assert resp.status == 206 and await resp.read() == full[10:]
        stale = {"Range": "bytes=10-", "If-Range": '"0-0"'}
        async with session.get(url, headers=stale) as resp:
            assert resp.status == 200 and await resp.read() == full
        async with session.get(url, headers={"Range": "bytes=10-", "If-Range": modified}) as resp:
            assert resp.status in (200, 206)  # date validators are weak; either is allowed
            assert await resp.read() == (full[10:] if resp.status == 206 else full)
        async with session.get(url, headers={"Range": f"bytes={size}-"}) as resp:
            assert resp.status == 416 and resp.headers["Content-Range"] == f"bytes */{size}"
        async with session.get(url, headers={"If-None-Match": etag}) as resp:
            assert resp.status == 304


async def test_bytes_served_again_counts_overlap_only(emu) -> None:
    async with aiohttp.ClientSession() as session:
        path = (await segment_paths(emu.base_url, session))[1]
        url = emu.base_url + path.lstrip("/")
        async with session.get(url, headers={"Range": "bytes=0-999"}) as resp:
            first = await resp.read()
        async with session.get(url, headers={"Range": "bytes=1000-"}) as resp:
            rest = await resp.read()  # a correct resume: nothing served twice
        size = len(first) + len(rest)
        await settled(emu)
        assert emu.stats()["files"][path]["bytes_served_again"] == 0
        async with session.get(url) as resp:
            await resp.read()  # a restart from zero: every byte again
    await settled(emu)
    stats = emu.stats()
    assert stats["files"][path]["bytes_served"] == 2 * size
    assert stats["files"][path]["bytes_served_again"] == size
    assert stats["clients"]["127.0.0.1"]["bytes_served_again"] == size


def stalled_download(url: str) -> socket.socket:
    """Open a GET with a tiny receive window and never read it, so the server stays busy."""
    parts = urlsplit(url)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((parts.hostname, parts.port))
    sock.sendall(f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode())
    return sock


async def test_second_concurrent_download_is_refused(tmp_path: Path) -> None:
    async with run_emulator(tmp_path, emails=[EMAIL], file_size=24 * 1024 * 1024) as emu, \
            aiohttp.ClientSession() as session:
        paths = await segment_paths(emu.base_url, session)
        big = emu.base_url + paths[0].lstrip("/")
        clients = emu.state.stats.clients
        sock = await asyncio.to_thread(stalled_download, big)
        try:
            await wait_for(lambda: clients["127.0.0.1"].active_downloads == 1, timeout=30)
            async with session.get(emu.base_url + paths[1].lstrip("/")) as resp:
                assert resp.status == 503 and resp.headers["Retry-After"] == "1"
        finally:
            sock.close()
        await wait_for(lambda: clients["127.0.0.1"].active_downloads == 0)
        async with session.get(emu.base_url + paths[1].lstrip("/"),
                               headers={"Range": "bytes=0-9"}) as resp:
            assert resp.status == 206
        stats = emu.stats()
    client = stats["clients"]["127.0.0.1"]
    assert client["refused_connections"] == 1 and client["peak_concurrent_downloads"] == 1
    assert stats["violations"] == 1
    assert client["violations"][0]["kind"] == "download_connection"


async def test_download_connection_limit_is_configurable(tmp_path: Path) -> None:
    async with run_emulator(tmp_path, emails=[EMAIL], download_connections_per_client=3) as emu, \
            aiohttp.ClientSession() as session:
        paths = await segment_paths(emu.base_url, session)

        async def fetch(path: str) -> int:
            async with session.get(emu.base_url + path.lstrip("/")) as resp:
                await resp.read()
                return resp.status

        assert await asyncio.gather(*(fetch(p) for p in paths[:3])) == [200, 200, 200]
        assert emu.stats()["clients"]["127.0.0.1"]["refused_connections"] == 0


async def test_unknown_and_bad_paths(emu) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(emu.base_url + "SUM1/D1/S00000/nothing.fits") as resp:
            assert resp.status == 404
        async with session.get(emu.base_url + "SUM1/D1/%2E%2E/x") as resp:
            assert resp.status in (400, 404)
