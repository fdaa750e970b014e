"""In-process emulators for tests: their options from the ``emulator`` marker, one served from a
background thread for synchronous clients (drms, sunpy), and drms/sunpy pointed at one.

The fixtures over these (``emu``, ``shared_emu``) are in ``tests/conftest.py``.
"""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import drms
import pytest

from jsocsim.config import make_config
from jsocsim.server import Emulator

MARKER = "emulator"


def emulator_options(node: pytest.Item | pytest.Collector) -> dict[str, Any]:
    """The options of the ``emulator(**options)`` markers on ``node``: the module's, updated by
    its class's, updated by the test's own (the closest marker wins for each option). Copied,
    so no emulator shares a list or a config object with the next test's."""
    options: dict[str, Any] = {}
    for mark in reversed(list(node.iter_markers(MARKER))):
        if mark.args:
            raise TypeError(f"@pytest.mark.{MARKER} takes keyword options only, got {mark.args}")
        options.update(copy.deepcopy(mark.kwargs))
    return options


class ThreadedEmulator:
    """An Emulator served from its own thread and event loop (for synchronous clients)."""

    def __init__(self, data_dir: Path, **options: Any) -> None:
        self._options = {"data_dir": data_dir, **options}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.emulator: Emulator | None = None

    def start(self) -> Emulator:
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


@contextmanager
def threaded_emulator(data_dir: Path, **options: Any) -> Iterator[Emulator]:
    """A started ThreadedEmulator's emulator, stopped on exit."""
    runner = ThreadedEmulator(data_dir, **options)
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


@contextmanager
def sunpy_pointed_at(base_url: str) -> Iterator[None]:
    """sunpy's JSOCClient talks to the emulator at ``base_url`` (drms's "jsoc" server config is
    replaced, and put back on exit)."""
    configs = drms.config._server_configs
    saved = configs.get("jsoc")
    configs["jsoc"] = server_config(base_url, name="jsoc")
    try:
        yield
    finally:
        if saved is None:
            configs.pop("jsoc", None)
        else:
            configs["jsoc"] = saved
