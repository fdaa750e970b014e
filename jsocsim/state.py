"""Shared emulator state: the simulated clock and the `SimState` bundle stored in the aiohttp app.

Every handler reaches the state as ``request.app[STATE_KEY]``.  server.py builds it, in this order::

    clock   = SimClock(config.clock_start)
    catalog = Catalog.load()
    engine  = RecordEngine(catalog, config.records, clock)
    stats   = Stats()
    faults  = Faults(config.faults, clock, config.records)
    store   = FileStore(config, engine)    # store.py (helper-3): FileStore(config: EmulatorConfig,
                                           #   engine: RecordEngine); uses config.data_dir,
                                           #   config.file_size, config.seed
    state   = SimState(config, catalog, engine, store, None, stats, faults, clock)
    state.exports = ExportManager(state)   # exports.py (helper-3): ExportManager(state: SimState);
                                           #   reads state.config / clock / engine / store /
                                           #   faults / stats; may start tasks lazily (a running
                                           #   loop exists when handlers call it); optional
                                           #   `async close()` is awaited on shutdown.

Reset (`POST /_sim/reset`) calls `state.stats.reset()` in place (downloads in flight stay counted).

Stats calls exports.py makes (stats.py): `exp_request(email, ip, status, requestid)`,
`export_status(requestid, status)`, `pending_changed(email, ip, n_pending, ip_pending)`,
`violation(kind, email_or_ip, detail)`. Fault checks: `faults.roll("export_fail" |
"export_stuck", requestid)`, `faults.config.status6_polls`, `faults.config.export_expire_after`.
Offline data: `Record.online` (records.py; FaultConfig.offline_rate feeds it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from jsocsim.config import EmulatorConfig
    from jsocsim.faults import Faults
    from jsocsim.stats import Stats

# TAI seconds at the Unix epoch, before leap seconds: 1970-01-01 is 2557 days before 1977-01-01.
_UNIX_EPOCH_IN_DRMS = -2557 * 86400.0
_FALLBACK_TAI_MINUS_UTC = 37.0


def utc_unix_to_tai(unix_seconds: float) -> float:
    """UTC Unix time -> TAI seconds since the DRMS epoch (helper-1's timeslots when available)."""
    try:
        from jsocsim.timeslots import utc_to_tai
    except ImportError:  # pragma: no cover - only before timeslots.py exists
        return unix_seconds + _UNIX_EPOCH_IN_DRMS + _FALLBACK_TAI_MINUS_UTC
    return float(utc_to_tai(datetime.fromtimestamp(unix_seconds, tz=UTC)))


def parse_time_to_tai(text: str) -> float:
    """JSOC/ISO time string -> TAI seconds (helper-1's timeslots.parse_time)."""
    from jsocsim.timeslots import parse_time

    return float(parse_time(text))


class SimClock:
    """Simulated time in TAI seconds since 1977-01-01 TAI: real time plus a settable offset.

    Call it (``clock()``) for the current TAI seconds. ``advance(s)`` moves it forward;
    ``set(tai)`` jumps to an absolute TAI time. Time keeps flowing at real speed afterwards.
    """

    def __init__(self, start: str | float | None = None) -> None:
        self._offset = 0.0
        if isinstance(start, str):
            self.set(parse_time_to_tai(start))
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
    catalog: Any  # catalog.Catalog
    engine: Any  # records.RecordEngine
    store: Any  # store.FileStore
    exports: Any  # exports.ExportManager (set right after construction)
    stats: Stats
    faults: Faults
    clock: SimClock


STATE_KEY: web.AppKey[SimState] = web.AppKey("jsocsim_state", SimState)


def get_state(request: web.Request) -> SimState:
    """The SimState of the app serving `request`."""
    return request.app[STATE_KEY]


def client_ip(request: web.Request) -> str:
    """The client's IP address (the peer of the TCP connection)."""
    return request.remote or "unknown"
