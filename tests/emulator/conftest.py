"""Fixtures for the emulator tests: drms and sunpy clients pointed at the test's emulator.

The emulator itself is the shared ``emu`` fixture (``tests/conftest.py``); a synchronous test
gets one on a background thread, which drms and sunpy need.
"""

from __future__ import annotations

from collections.abc import Iterator

import drms
import pytest

from jsocsim.server import Emulator
from tests.emulators import server_config, sunpy_pointed_at


@pytest.fixture
def drms_client(emu: Emulator) -> drms.Client:
    """drms.Client talking to the emulator (series() via the showextseries wrapper)."""
    return drms.Client(server_config(emu.base_url))


@pytest.fixture
def sunpy_jsoc(emu: Emulator) -> Iterator[Emulator]:
    """Point sunpy's JSOCClient at the emulator by replacing drms's "jsoc" server config."""
    with sunpy_pointed_at(emu.base_url):
        yield emu
