"""Configuration of the JSOC emulator: every option as a dataclass field.

The CLI (`python -m jsocsim`), `run_emulator(**options)` and `POST /_sim/faults` all map onto
these two dataclasses. Times are seconds, sizes bytes unless a name says otherwise.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OFFLINE_MODES = ("status25", "tape")

# Staging models (docs/emulator.md, "Latency and staging time"). FLAT_STAGING is what
# EmulatorConfig defaults to: a fixed staging_delay, no per-record/per-MB cost, no queue.
# JSOC_STAGING follows docs/jsoc-protocol.md §7.10 and §7.13: the first estimate is 10 s, a
# one-file fits export is ready in tens of seconds and drms allows 60 s for it (one 15 MB HMI
# file took 38.8 s including its download); per-record/per-MB costs and 3 slots are estimates.
FLAT_STAGING: dict[str, float] = {"staging_delay": 1.0, "staging_per_record": 0.0,
                                  "staging_per_mb": 0.0, "staging_slots": 0}
JSOC_STAGING: dict[str, float] = {"staging_delay": 20.0, "staging_per_record": 0.5,
                                  "staging_per_mb": 0.1, "staging_slots": 3}
STAGING_MODELS = {"flat": FLAT_STAGING, "jsoc": JSOC_STAGING}
# EmulatorConfig fields that POST /_sim/config may change while the emulator runs.
RUNTIME_FIELDS = ("latency", "bandwidth", "staging_delay", "staging_per_record",
                  "staging_per_mb", "staging_slots", "tape_delay")


@dataclass
class FaultConfig:
    """Fault-injection switches. Rates are probabilities in [0, 1], decided by seeded rolls.

    HTTP-level faults (applied by server.py / files.py):
      cgi_error_rate    CGI requests answered with HTTP 500.
      slow_rate         requests (CGI and file) delayed by `slow_seconds` before answering.
      reset_rate        file downloads whose connection is closed after `reset_fraction` of the
                        body (the client sees a reset / incomplete body).
      truncate_rate     file downloads that send `truncate_fraction` of the promised
                        Content-Length, then end the connection cleanly.
      ignore_range_rate ranged file requests answered 200 with the whole file.
      changing_files    URL paths whose content changes (new bytes, new ETag) when they are
                        requested again after a first request (e.g. on resume), once per path;
                        `changing_file_rate` picks repeated requests of any path at that rate.
      outages           windows (start, duration), start in seconds after the faults were set;
                        inside a window every request fails (CGIs 500, files 503).
      outage_seconds    shorthand for one window (0, outage_seconds) starting now.
    Export-level faults (applied by exports.py):
      export_fail_rate   exports that end with status 4 instead of 0.
      export_stuck_rate  exports that stay pending (status 1) forever.
      export_expire_after seconds after completion when an export reports 5 (None = use
                         EmulatorConfig.export_expiry).
      status6_polls      the first N exp_status polls of each request answer status 6.
      offline_rate       fraction of storage units (by sunum) that are offline (tape); when set
                         (here or later) it becomes records.RecordsConfig.offline_fraction, so
                         Record.online, rs_list and exports all agree.
    """

    seed: int = 0
    cgi_error_rate: float = 0.0
    slow_rate: float = 0.0
    slow_seconds: float = 1.0
    reset_rate: float = 0.0
    reset_fraction: float = 0.5
    truncate_rate: float = 0.0
    truncate_fraction: float = 0.5
    ignore_range_rate: float = 0.0
    changing_files: list[str] = field(default_factory=list)
    changing_file_rate: float = 0.0
    outages: list[tuple[float, float]] = field(default_factory=list)
    outage_seconds: float = 0.0
    export_fail_rate: float = 0.0
    export_stuck_rate: float = 0.0
    export_expire_after: float | None = None
    status6_polls: int = 0
    offline_rate: float = 0.0

    def validate(self) -> None:
        """Raise ValueError naming the first field that is out of range."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if (f.name.endswith("_rate") or f.name.endswith("_fraction")) and not (
                isinstance(value, int | float) and 0.0 <= value <= 1.0
            ):
                raise ValueError(f"fault {f.name} must be a number in [0, 1], got {value!r}")
        for name in ("slow_seconds", "outage_seconds", "status6_polls"):
            if getattr(self, name) < 0:
                raise ValueError(f"fault {name} must be >= 0, got {getattr(self, name)!r}")
        for window in self.outages:
            if len(window) != 2 or window[1] < 0:
                raise ValueError(f"fault outages takes [start, duration] pairs, got {window!r}")

    def updated(self, **changes: Any) -> FaultConfig:
        """A copy with `changes` applied; unknown names or bad values raise ValueError."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown fault(s) {unknown}; accepted: {sorted(known)}")
        if "outages" in changes:
            changes["outages"] = [tuple(map(float, w)) for w in changes["outages"]]
        new = dataclasses.replace(self, **changes)
        new.validate()
        return new

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field."""
        return dataclasses.asdict(self)


def _default_records_config() -> Any:
    """The record engine's RecordsConfig with its defaults (imported lazily: it needs numpy)."""
    from jsocsim.records import RecordsConfig

    return RecordsConfig()


@dataclass
class EmulatorConfig:
    """Every emulator option (see docs/emulator.md for the CLI flags)."""

    data_dir: Path = Path("jsocsim-data")
    host: str = "127.0.0.1"
    port: int = 0
    emails: list[str] = field(default_factory=list)  # registered notify addresses (status 2)
    pending_emails: list[str] = field(default_factory=list)  # registration pending (status 3)
    staging_delay: float = 1.0  # base staging seconds: half in status 2, the rest in 1
    staging_per_record: float = 0.0  # extra staging seconds per exported record
    staging_per_mb: float = 0.0  # extra staging seconds per MB of the export's size
    staging_slots: int = 0  # exports staged at once site-wide; the rest queue (0 = no limit)
    latency: float = 0.0  # seconds before every CGI and file response (a network round trip)
    export_expiry: float = 7 * 86400.0  # seconds after completion until exp_status says 5
    file_size: int = 64 * 1024  # bytes of generated image data per file
    pending_per_email: int = 1  # pending exports per email before status 7
    pending_per_ip: int = 10  # pending exports per client IP before status 7
    pending_timeout: float = 3600.0  # a pending export stops counting after this long
    dup_window: float = 86400.0  # duplicate-export detection window
    max_export_mb: int = 100_000  # status 3 above this size
    download_connections_per_client: int = 1  # concurrent file downloads per client IP
    bandwidth: float = 0.0  # bytes per second per download; 0 = unlimited (sendfile)
    offline_mode: str = "status25"  # "status25" (2022 code) or "tape" (staged restore)
    tape_delay: float = 5.0  # extra staging seconds for offline data in "tape" mode
    seed: int = 0  # seeds record content and anything random outside faults
    clock_start: str | None = None  # JSOC/ISO time the simulated clock starts at; None = now
    records: Any = field(default_factory=_default_records_config)  # records.RecordsConfig
    faults: FaultConfig = field(default_factory=FaultConfig)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError with a clear message for an impossible option."""
        if self.offline_mode not in OFFLINE_MODES:
            raise ValueError(
                f"offline_mode must be one of {OFFLINE_MODES}, got {self.offline_mode!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        for name in ("staging_delay", "staging_per_record", "staging_per_mb", "latency",
                     "export_expiry", "pending_timeout", "dup_window", "tape_delay",
                     "bandwidth", "staging_slots"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if self.staging_slots != int(self.staging_slots):
            raise ValueError(f"staging_slots must be a whole number, got {self.staging_slots!r}")
        for name in ("file_size", "pending_per_email", "pending_per_ip", "max_export_mb",
                     "download_connections_per_client"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        self.faults.validate()


def make_config(**options: Any) -> EmulatorConfig:
    """EmulatorConfig from keyword options; `faults` may be a FaultConfig or a dict.

    Unknown option names raise ValueError listing the accepted ones.
    """
    known = {f.name for f in dataclasses.fields(EmulatorConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown emulator option(s) {unknown}; accepted: {sorted(known)}")
    faults = options.get("faults")
    if isinstance(faults, dict):
        options["faults"] = FaultConfig().updated(**faults)
    return EmulatorConfig(**options)


def update_runtime(config: EmulatorConfig, **changes: Any) -> dict[str, Any]:
    """Change RUNTIME_FIELDS of a running emulator's `config` in place; returns their values.

    Unknown or fixed fields and bad values raise ValueError, leaving `config` unchanged.
    """
    fixed = sorted(set(changes) - set(RUNTIME_FIELDS))
    if fixed:
        raise ValueError(f"option(s) {fixed} cannot change at run time; "
                         f"accepted: {list(RUNTIME_FIELDS)}")
    dataclasses.replace(config, **changes)  # validates without touching `config`
    for name, value in changes.items():
        setattr(config, name, value)
    return runtime_view(config)


def runtime_view(config: EmulatorConfig) -> dict[str, Any]:
    """The current values of RUNTIME_FIELDS."""
    return {name: getattr(config, name) for name in RUNTIME_FIELDS}
