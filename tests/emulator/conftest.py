"""Fixtures for the emulator tests: in-process emulators on port 0 and clients pointed at them.

`emulator` runs on the test's own event loop (for aiohttp-based async tests). drms and sunpy
are synchronous, so `threaded_emulator` runs one on a background thread's loop and
`drms_client` / `sunpy_jsoc` point at that one.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import drms
import pytest

from jsocsim.server import Emulator, run_emulator

EMAIL = "tester@example.org"
OTHER = "other@example.org"  # a second registered address
PENDING_EMAIL = "waiting@example.org"


@pytest.fixture
async def emulator(tmp_path: Path) -> AsyncIterator[Emulator]:
    """An emulator on this test's event loop (port 0, tmp data dir)."""
    async with run_emulator(tmp_path / "jsoc", emails=[EMAIL], pending_emails=[PENDING_EMAIL],
                            staging_delay=0.2) as emu:
        yield emu


class ThreadedEmulator:
    """An Emulator served from its own thread and event loop (for synchronous clients)."""

    def __init__(self, data_dir: Path, **options: Any) -> None:
        self._options = {"data_dir": data_dir, **options}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.emulator: Emulator | None = None

    def start(self) -> Emulator:
        from jsocsim.config import make_config

        self._thread.start()
        self.emulator = Emulator(make_config(**self._options))
        asyncio.run_coroutine_threadsafe(self.emulator.start(), self._loop).result(timeout=30)
        return self.emulator

    def stop(self) -> None:
        if self.emulator is not None:
            asyncio.run_coroutine_threadsafe(self.emulator.stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()


@pytest.fixture
def threaded_emulator(tmp_path: Path) -> Iterator[Emulator]:
    """An emulator on a background thread, usable from synchronous tests."""
    runner = ThreadedEmulator(tmp_path / "jsoc", emails=[EMAIL], pending_emails=[PENDING_EMAIL],
                              staging_delay=0.2)
    try:
        yield runner.start()
    finally:
        runner.stop()


def server_config(base_url: str, name: str = "jsocsim", wrapper: bool = True) -> drms.ServerConfig:
    """A drms ServerConfig for the emulator at `base_url` (wrapper=False: plain show_series)."""
    keys: dict[str, Any] = {
        "cgi_baseurl": base_url + "cgi-bin/ajax/",
        "cgi_show_series": "show_series",
        "cgi_jsoc_info": "jsoc_info",
        "cgi_jsoc_fetch": "jsoc_fetch",
        "cgi_check_address": "checkAddress.sh",
        "http_download_baseurl": base_url,
        "encoding": "latin1",
    }
    if wrapper:
        keys.update(cgi_show_series_wrapper="showextseries", show_series_wrapper_dbhost="hmidb2")
    return drms.ServerConfig(name=name, **keys)


@pytest.fixture
def drms_client(threaded_emulator: Emulator) -> drms.Client:
    """drms.Client talking to the threaded emulator (series() via the showextseries wrapper)."""
    return drms.Client(server_config(threaded_emulator.base_url))


@pytest.fixture
def sunpy_jsoc(threaded_emulator: Emulator) -> Iterator[Emulator]:
    """Point sunpy's JSOCClient at the emulator by replacing drms's "jsoc" server config."""
    configs = drms.config._server_configs
    saved = configs.get("jsoc")
    configs["jsoc"] = server_config(threaded_emulator.base_url, name="jsoc")
    try:
        yield threaded_emulator
    finally:
        if saved is None:
            configs.pop("jsoc", None)
        else:
            configs["jsoc"] = saved


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Emulator]]:
    """Start threaded emulators with options; all are stopped at the end."""
    runners: list[ThreadedEmulator] = []

    def run(**options: Any) -> Emulator:
        options = {"emails": [EMAIL, OTHER], "staging_delay": 0.05, **options}
        runners.append(ThreadedEmulator(tmp_path / f"jsoc{len(runners)}", **options))
        return runners[-1].start()

    yield run
    for runner in runners:
        runner.stop()
