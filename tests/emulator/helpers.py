"""Helpers for the emulator's tests: registered addresses, the default emulator options, raw
jsoc_fetch/jsoc_info calls and waits on the emulator's own state."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

import aiohttp

from jsocsim.server import Emulator

EMAIL = "tester@example.org"
OTHER = "other@example.org"  # a second registered address
PENDING_EMAIL = "waiting@example.org"
# the emulator most tests here use: one registered and one pending address, quick staging
DEFAULT_OPTIONS: dict[str, Any] = {"emails": [EMAIL], "pending_emails": [PENDING_EMAIL],
                                   "staging_delay": 0.2}
# the one the export-limit and fault tests use: two registered addresses, quicker staging
EXPORT_OPTIONS: dict[str, Any] = {"emails": [EMAIL, OTHER], "staging_delay": 0.05}
RECORD_SET = "hmi.V_45s[2013.07.03_08:42:00_TAI/135s]"


def get(emu: Emulator, path: str) -> bytes:
    with urllib.request.urlopen(emu.base_url + path.lstrip("/"), timeout=30) as response:
        return response.read()


def jsoc_fetch(emu: Emulator, query: str) -> dict[str, Any]:
    """Raw jsoc_fetch call with a hand-built query string."""
    return json.loads(get(emu, "cgi-bin/ajax/jsoc_fetch?" + query))


def poll_until_done(emu: Emulator, requestid: str, timeout: float = 20) -> dict[str, Any]:
    """exp_status until status 0 (string or number), with a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        reply = jsoc_fetch(emu, f"op=exp_status&requestid={requestid}")
        if int(reply["status"]) == 0:
            return reply
        assert int(reply["status"]) in (1, 2, 6), reply
        assert time.monotonic() < deadline, f"{requestid} not done: {reply}"
        time.sleep(0.02)


def request(emu: Emulator, ds: str, email: str = EMAIL, **params: str) -> dict[str, Any]:
    """A raw url/fits exp_request for ``ds`` (``params`` add to or replace the fields)."""
    query = urllib.parse.urlencode({"op": "exp_request", "ds": ds, "notify": email,
                                    "method": "url", "protocol": "fits", **params})
    return jsoc_fetch(emu, query)


def m45(minutes: int) -> str:
    """hmi.M_45s over `minutes` minutes: floor(60 * minutes / 45) records."""
    return f"hmi.M_45s[2014.01.01_00:00:00_TAI/{minutes}m]{{magnetogram}}"


async def segment_paths(base: str, session: aiohttp.ClientSession, ds: str = RECORD_SET,
                        seg: str = "Dopplergram") -> list[str]:
    """SUMS paths of `seg` for the records of `ds` (from rs_list)."""
    params = {"op": "rs_list", "ds": ds, "seg": seg}
    async with session.get(base + "cgi-bin/ajax/jsoc_info", params=params) as resp:
        return (await resp.json())["segments"][0]["values"]


async def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll `condition()` until true or fail after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def settled(emu: Emulator) -> None:
    """Wait until no download is in flight (the server books bytes after the last one left)."""
    clients = emu.state.stats.clients
    await wait_for(lambda: all(c.active_downloads == 0 for c in clients.values()))


