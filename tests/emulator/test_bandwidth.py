"""The bandwidth limit: throttled bodies honour Range, and a client that leaves mid-body is
counted for exactly what it received, so a resumed download re-serves nothing."""

from __future__ import annotations

import asyncio
import hashlib

import aiohttp

from jsocsim.server import run_emulator
from tests.emulator.helpers import EMAIL, segment_paths, settled, wait_for

RATE = 2 * 1024 * 1024  # bytes per second


async def test_throttled_download_abandoned_then_resumed(tmp_path) -> None:
    async with run_emulator(tmp_path, emails=[EMAIL], file_size=1024 * 1024,
                            bandwidth=RATE) as emu, aiohttp.ClientSession() as session:
        path = (await segment_paths(emu.base_url, session))[0]
        url = emu.base_url + path.lstrip("/")
        async with session.get(url) as resp:
            assert resp.status == 200
            total = int(resp.headers["Content-Length"])
            etag = resp.headers["ETag"]
            head = await resp.content.readexactly(total // 4)
            resp.close()  # the downloader dies mid-body
        await settled(emu)
        stats = emu.stats()["files"][path]
        received_by_server = stats["bytes_served"]
        assert len(head) <= received_by_server < total
        headers = {"Range": f"bytes={len(head)}-", "If-Range": etag}
        async with session.get(url, headers=headers) as resp:
            assert resp.status == 206
            assert resp.headers["Content-Range"] == f"bytes {len(head)}-{total - 1}/{total}"
            body = head + await resp.read()
        await settled(emu)
        await wait_for(lambda: emu.stats()["files"][path]["requests"] == 2)
        assert hashlib.sha256(body).hexdigest() == emu.manifest()[path]["sha256"]
        stats = emu.stats()["files"][path]
        # Only what the server had pushed past the client's read position is sent again.
        assert stats["bytes_served_again"] == received_by_server - len(head)
        assert stats["bytes_served_again"] < total // 2


async def test_a_throttled_small_file_ends_when_its_last_byte_arrives(tmp_path) -> None:
    """A body smaller than one block used to go out at once while the handler slept out its
    time, still counted as active: the client's next request on the same connection was
    refused as a second download. Now the body arrives paced and the response ends with it."""
    rate = 40 * 1024
    async with run_emulator(tmp_path, emails=[EMAIL], file_size=40 * 1024,
                            bandwidth=rate) as emu, aiohttp.ClientSession() as session:
        paths = (await segment_paths(emu.base_url, session))[:3]
        loop_time = asyncio.get_running_loop().time
        for path in paths:
            began = loop_time()
            async with session.get(emu.base_url + path.lstrip("/")) as resp:
                assert resp.status == 200, await resp.text()
                size = len(await resp.read())
            assert loop_time() - began >= 0.9 * size / rate  # paced, not sent at once
        await settled(emu)
        client = next(iter(emu.stats()["clients"].values()))
        assert client["refused_connections"] == 0 and client["violations"] == [], client
        assert client["peak_concurrent_downloads"] == 1
