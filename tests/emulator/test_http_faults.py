"""Every HTTP-level fault, shown happening as specified: 500s, slow, reset, truncation, Range
ignored, changing file, outages; plus reproducibility of seeded faults and bad fault input."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest

from jsocsim.server import run_emulator
from tests.emulator.helpers import DEFAULT_OPTIONS, EMAIL, segment_paths, settled

pytestmark = pytest.mark.emulator(**DEFAULT_OPTIONS)
SUMMARY = {"op": "rs_summary", "ds": "hmi.M_45s[2014.01.01_00:00:00_TAI/1h]"}


async def cgi_statuses(base: str, n: int) -> list[int]:
    """HTTP statuses of `n` successive rs_summary calls."""
    out = []
    async with aiohttp.ClientSession() as session:
        for _ in range(n):
            async with session.get(base + "cgi-bin/ajax/jsoc_info", params=SUMMARY) as resp:
                out.append(resp.status)
    return out


async def first_file_url(emu) -> tuple[str, str]:
    """(url, path) of a record file, plus its full content fetched once."""
    async with aiohttp.ClientSession() as session:
        path = (await segment_paths(emu.base_url, session))[0]
    return emu.base_url + path.lstrip("/"), path


async def raw_get(url: str, headers: dict[str, str] | None = None) -> tuple[str, bytes]:
    """GET over a plain socket, reading until the server closes: (header block, body bytes)."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    writer.write(f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n{extra}\r\n".encode())
    data = b""
    try:
        while chunk := await reader.read(65536):
            data += chunk
    except ConnectionResetError:
        pass
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return head.decode("latin1"), body


def header(head: str, name: str) -> str:
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    raise KeyError(name)


async def test_cgi_500_all_and_files_unaffected(emu) -> None:
    url, _ = await first_file_url(emu)
    emu.set_faults(cgi_error_rate=1.0)
    assert await cgi_statuses(emu.base_url, 3) == [500, 500, 500]
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
    emu.set_faults(cgi_error_rate=0.0)
    assert await cgi_statuses(emu.base_url, 2) == [200, 200]


async def test_cgi_500_rate_is_seeded_and_reproducible(tmp_path: Path) -> None:
    patterns = []
    for run in range(2):
        async with run_emulator(tmp_path / str(run), emails=[EMAIL],
                                faults={"seed": 7, "cgi_error_rate": 0.5}) as emu:
            patterns.append(await cgi_statuses(emu.base_url, 24))
    assert patterns[0] == patterns[1]
    assert {200, 500} == set(patterns[0])  # the rate gives a mix, identical in both runs


async def test_slow_responses(emu) -> None:
    emu.set_faults(slow_rate=1.0, slow_seconds=0.3)
    started = time.monotonic()
    assert await cgi_statuses(emu.base_url, 1) == [200]
    assert time.monotonic() - started >= 0.3
    assert emu.state.faults.fired["slow"] == 1


async def test_reset_mid_body(emu) -> None:
    url, path = await first_file_url(emu)
    emu.set_faults(reset_rate=1.0, reset_fraction=0.25)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            async with session.get(url) as resp:
                await resp.read()
    emu.set_faults(reset_rate=0.0)
    size = emu.manifest()[path]["size"]
    assert emu.stats()["files"][path]["bytes_served"] == int(size * 0.25)
    async with aiohttp.ClientSession() as session, session.get(
            url, headers={"Range": f"bytes={int(size * 0.25)}-"}) as resp:
        assert resp.status == 206  # a correct resume completes the file, nothing served twice
        await resp.read()
    await settled(emu)
    assert emu.stats()["files"][path]["bytes_served_again"] == 0


async def test_truncated_body(emu) -> None:
    url, path = await first_file_url(emu)
    emu.set_faults(truncate_rate=1.0, truncate_fraction=0.5)
    head, body = await raw_get(url)
    size = emu.manifest()[path]["size"]
    assert " 200 " in head.split("\r\n")[0]
    assert int(header(head, "Content-Length")) == size
    assert len(body) == size // 2  # fewer bytes than promised, then the connection closed
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientPayloadError):
            async with session.get(url) as resp:
                await resp.read()


async def test_range_ignored(emu) -> None:
    url, path = await first_file_url(emu)
    emu.set_faults(ignore_range_rate=1.0)
    async with aiohttp.ClientSession() as session, session.get(
            url, headers={"Range": "bytes=100-"}) as resp:
        body = await resp.read()
        assert resp.status == 200 and "Content-Range" not in resp.headers
    assert len(body) == emu.manifest()[path]["size"]


async def test_changing_file_gets_new_etag(emu) -> None:
    url, path = await first_file_url(emu)
    emu.set_faults(changing_files=[path])
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as resp:
            first, etag = await resp.read(), resp.headers["ETag"]
        resume = {"Range": "bytes=100-", "If-Range": etag}
        async with session.get(url, headers=resume) as resp:
            second = await resp.read()
            assert resp.status == 200 and resp.headers["ETag"] != etag
        assert second != first
        async with session.get(url, headers={"Range": "bytes=100-",
                                             "If-Range": resp.headers["ETag"]}) as resp:
            assert resp.status == 206 and await resp.read() == second[100:]  # changes once
    assert emu.manifest()[path]["sha256"] != hashlib.sha256(first).hexdigest()


async def test_outage_fails_everything_then_recovers(emu) -> None:
    url, _ = await first_file_url(emu)
    emu.set_faults(outage_seconds=60)
    assert await cgi_statuses(emu.base_url, 1) == [500]
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 503 and int(resp.headers["Retry-After"]) > 0
    emu.advance_clock(61)
    assert await cgi_statuses(emu.base_url, 1) == [200]


async def test_outage_windows_via_control_endpoint(emu) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(emu.base_url + "_sim/faults",
                                json={"outages": [[100, 50]]}) as resp:
            assert resp.status == 200 and not (await resp.json())["in_outage"]
        assert await cgi_statuses(emu.base_url, 1) == [200]
        async with session.post(emu.base_url + "_sim/clock", json={"advance": 120}):
            pass
        assert await cgi_statuses(emu.base_url, 1) == [500]
        emu.advance_clock(40)
        assert await cgi_statuses(emu.base_url, 1) == [200]


async def test_bad_fault_settings_are_rejected_clearly(emu) -> None:
    async with aiohttp.ClientSession() as session:
        for body, words in (({"cgi_error_rate": 2}, "[0, 1]"), ({"nope": 1}, "unknown fault"),
                            ([1, 2], "JSON object")):
            async with session.post(emu.base_url + "_sim/faults", json=body) as resp:
                assert resp.status == 400 and words in (await resp.json())["error"]
        async with session.post(emu.base_url + "_sim/clock", json={"advance": -5}) as resp:
            assert resp.status == 400 and "forward" in (await resp.json())["error"]


async def test_control_stats_reset_and_manifest(emu) -> None:
    await cgi_statuses(emu.base_url, 2)
    async with aiohttp.ClientSession() as session:
        async with session.get(emu.base_url + "_sim/stats") as resp:
            assert (await resp.json())["clients"]["127.0.0.1"]["cgi_requests"] == 2
        async with session.post(emu.base_url + "_sim/reset") as resp:
            assert resp.status == 200
        async with session.get(emu.base_url + "_sim/stats") as resp:
            assert (await resp.json())["clients"] == {}
        async with session.get(emu.base_url + "_sim/manifest") as resp:
            assert resp.status == 200 and isinstance(await resp.json(), dict)
