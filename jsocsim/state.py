"""Shared emulator state: the simulated clock and the `SimState` bundle stored in the aiohttp app.

Every handler reaches the state as ``request.app[STATE_KEY]``; ``server.build_state`` builds it
(clock, catalog, record engine, file store, stats, faults, then the export manager, which reads
the rest). ``POST /_sim/reset`` resets ``state.stats`` in place (downloads in flight stay
counted).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aiohttp import web

from jsocsim.timeslots import parse_time, utc_to_tai

if TYPE_CHECKING:
    from jsocsim.catalog import Catalog
    from jsocsim.config import EmulatorConfig
    from jsocsim.exports import ExportManager
    from jsocsim.faults import Faults
    from jsocsim.records import RecordEngine
    from jsocsim.stats import Stats
    from jsocsim.store import FileStore


def utc_unix_to_tai(unix_seconds: float) -> float:
    """UTC Unix time -> TAI seconds since the DRMS epoch."""
    return float(utc_to_tai(datetime.fromtimestamp(unix_seconds, tz=UTC)))


class SimClock:
    """Simulated time in TAI seconds since 1977-01-01 TAI: real time plus a settable offset.

    Call it (``clock()``) for the current TAI seconds. ``advance(s)`` moves it forward;
    ``set(tai)`` jumps to an absolute TAI time. Time keeps flowing at real speed afterwards.
    """

    def __init__(self, start: str | float | None = None) -> None:
        self._offset = 0.0
        if isinstance(start, str):
            self.set(float(parse_time(start)))
        elif start is not None:
            self.set(float(start))

    def real_tai(self) -> float:
        """TAI seconds of the real wall-clock time."""
        return utc_unix_to_tai(time.time())

    def __call__(self) -> float:
        return self.real_tai() + self._offset

    def now(self) -> float:
        """Current simulated TAI seconds (same as calling the clock)."""
        return self()

    def advance(self, seconds: float) -> float:
        """Move the clock forward by `seconds` (>= 0); return the new time."""
        if seconds < 0:
            raise ValueError(f"the clock only moves forward; got advance={seconds}")
        self._offset += seconds
        return self()

    def set(self, tai: float) -> float:
        """Jump to TAI seconds `tai`; return it."""
        self._offset = tai - self.real_tai()
        return tai

    def utc_datetime(self) -> datetime:
        """Current simulated time as an aware UTC datetime (for HTTP dates, request ids)."""
        return datetime.fromtimestamp(time.time() + self._offset, tz=UTC)


@dataclass
class SimState:
    """Everything a request handler needs; one per running emulator."""

    config: EmulatorConfig
    catalog: Catalog
    engine: RecordEngine
    store: FileStore
    stats: Stats
    faults: Faults
    clock: SimClock
    exports: ExportManager = field(init=False)  # set right after construction: it reads the rest


STATE_KEY: web.AppKey[SimState] = web.AppKey("jsocsim_state", SimState)


def get_state(request: web.Request) -> SimState:
    """The SimState of the app serving `request`."""
    return request.app[STATE_KEY]


def client_ip(request: web.BaseRequest) -> str:
    """The client's IP address (the peer of the TCP connection)."""
    return request.remote or "unknown"
