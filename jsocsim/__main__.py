"""CLI: ``python -m jsocsim --data-dir DIR --email ADDR [options]``; serves until SIGINT/SIGTERM.

Prints ``jsocsim listening on http://HOST:PORT/`` (flushed) once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import logging
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

from jsocsim.config import OFFLINE_MODES, STAGING_MODELS, FaultConfig, make_config

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
STAGING_FLAGS = ("staging_delay", "staging_per_record", "staging_per_mb", "staging_slots")
EXTRA_MODULES = ("numpy", "PIL")  # the `jsocsim` extra: not needed by the daemon


def parse_size(text: str) -> int:
    """'65536', '64K', '15M', '1.5GiB' -> bytes."""
    m = _SIZE_RE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {text!r}: use bytes or a K/M/G suffix")
    unit = (m[2] or "").lower()[:1]
    return int(float(m[1]) * _SIZE_UNITS[unit])


def parse_fault(text: str) -> tuple[str, Any]:
    """'NAME=VALUE' -> (FaultConfig field, typed value)."""
    name, sep, raw = text.partition("=")
    fields = {f.name: f for f in dataclasses.fields(FaultConfig)}
    name = name.strip().replace("-", "_")
    if not sep or name not in fields:
        raise argparse.ArgumentTypeError(
            f"bad --fault {text!r}: use NAME=VALUE with NAME one of {', '.join(sorted(fields))}")
    try:
        return name, _fault_value(name, raw.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad --fault {text!r}: {exc}") from None


def _fault_value(name: str, raw: str) -> Any:
    if name == "changing_files":
        return [p.strip() for p in raw.split(",") if p.strip()]
    if name == "outages":  # "start:duration,start:duration"
        windows = []
        for part in filter(None, (p.strip() for p in raw.split(","))):
            start, _, duration = part.partition(":")
            if not duration:
                raise ValueError("outages takes START:DURATION[,START:DURATION...] in seconds")
            windows.append((float(start), float(duration)))
        return windows
    if name == "export_expire_after":
        return None if raw.lower() in ("", "none") else float(raw)
    if name in ("seed", "status6_polls"):
        return int(raw)
    return float(raw)


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser for every emulator option."""
    p = argparse.ArgumentParser(prog="python -m jsocsim", description=__doc__.split("\n")[0])
    add = p.add_argument
    add("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    add("--port", type=int, default=0, help="port to bind; 0 picks a free one (default)")
    add("--data-dir", type=Path, required=True, help="directory for generated files and exports")
    add("--email", action="append", default=[], help="registered notify address (repeatable)")
    add("--pending-email", action="append", default=[],
        help="address whose registration is pending (checkAddress status 3; repeatable)")
    add("--staging-model", choices=sorted(STAGING_MODELS), default=None,
        help="base staging figures: jsoc (realistic; the default when no --staging-* flag is "
             "given) or flat (1 s, no costs, no queue; the default when one is)")
    add("--staging-delay", type=float, default=None,
        help="base staging seconds, half in status 2, the rest in 1 (jsoc 20, flat 1)")
    add("--staging-per-record", type=float, default=None,
        help="extra staging seconds per record (jsoc 0.5, flat 0)")
    add("--staging-per-mb", type=float, default=None,
        help="extra staging seconds per MB of the export (jsoc 0.1, flat 0)")
    add("--staging-slots", type=int, default=None,
        help="exports staged at once site-wide, others queue; 0 = no limit (jsoc 3, flat 0)")
    add("--latency", type=float, default=0.0,
        help="seconds before every CGI and file response, like a round trip (default 0)")
    add("--export-expiry", type=float, default=7 * 86400.0,
        help="seconds after completion until an export reports status 5 (default 7 days)")
    add("--file-size", type=parse_size, default=64 * 1024,
        help="bytes of generated image data per file, e.g. 64K or 15M (default 64K)")
    add("--pending-per-email", type=int, default=1, help="pending exports per email (default 1)")
    add("--pending-per-ip", type=int, default=10, help="pending exports per IP (default 10)")
    add("--pending-timeout", type=float, default=3600.0,
        help="seconds a pending export counts toward the limits (default 3600)")
    add("--dup-window", type=float, default=86400.0, help="duplicate-export window in seconds")
    add("--max-export-mb", type=int, default=100_000, help="status 3 above this size (MB)")
    add("--download-connections", type=int, default=1, dest="download_connections_per_client",
        help="concurrent file downloads allowed per client IP (default 1)")
    add("--bandwidth", type=parse_size, default=0,
        help="bytes per second per download, e.g. 5M; 0 = unlimited (default)")
    add("--offline-mode", choices=OFFLINE_MODES, default="status25",
        help="offline data: status25 (2022 JSOC) or tape (staged restore)")
    add("--tape-delay", type=float, default=5.0, help="extra staging seconds in tape mode")
    add("--seed", type=int, default=0, help="seed for generated content")
    add("--clock-start", default=None, help="simulated start time, e.g. 2025.01.01_00:00:00_TAI")
    add("--fault", type=parse_fault, action="append", default=[], metavar="NAME=VALUE",
        help="fault setting, repeatable: " + ", ".join(f.name for f in
                                                       dataclasses.fields(FaultConfig)))
    add("--flare-table", metavar="CSV", help="GOES flare list (columns start, peak, end, "
        "goes_class, noaa_ar) driving AIA exposure control; default: the short built-in list "
        "of well-known X flares (docs/emulator.md)")
    add("--log-level", default="WARNING", help="logging level (default WARNING)")
    return p


async def serve(options: dict[str, Any]) -> None:
    """Start the emulator, print its URL, and wait for SIGINT/SIGTERM."""
    from jsocsim.server import Emulator

    emulator = Emulator(make_config(**options))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    base_url = await emulator.start()
    print(f"jsocsim listening on {base_url}", flush=True)
    try:
        await stop.wait()
    finally:
        await emulator.stop()


def apply_staging_model(args: dict[str, Any]) -> None:
    """Fill unset --staging-* options from --staging-model (default: jsoc when no staging
    flag was given, flat otherwise, so `--staging-delay 0.5` keeps meaning 0.5 s)."""
    model = args.pop("staging_model")
    given = {name: args[name] for name in STAGING_FLAGS if args[name] is not None}
    if model is None:
        model = "flat" if given else "jsoc"
    args.update({**STAGING_MODELS[model], **given})


def use_flare_table(path: str | None) -> str | None:
    """Point the flare look-up at the operator's table; an error message if it is unusable."""
    from jsocsim.flares import FLARE_TABLE_ENV, flare_table

    if not path:
        return None
    os.environ[FLARE_TABLE_ENV] = path
    flare_table.cache_clear()
    try:
        flare_table()
    except ValueError as exc:
        return str(exc)
    return None


def missing_extra() -> list[str]:
    """The emulator's own dependencies that are not installed."""
    missing = []
    for name in EXTRA_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError:
            missing.append(name)
    return missing


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    args = vars(build_parser().parse_args(argv))
    if missing := missing_extra():
        print(f"jsocsim: error: the emulator needs {', '.join(missing)}, which `pip install "
              "jsoc-bulk` leaves out: pip install 'jsoc-bulk[jsocsim]'", file=sys.stderr)
        return 1
    logging.basicConfig(level=args.pop("log_level").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    faults = dict(args.pop("fault"))
    args["emails"] = args.pop("email")
    args["pending_emails"] = args.pop("pending_email")
    apply_staging_model(args)
    if err := use_flare_table(args.pop("flare_table")):
        print(f"jsocsim: error: {err}", file=sys.stderr)
        return 2
    try:
        args["faults"] = FaultConfig().updated(**faults)
        make_config(**args)  # validate before binding
    except (ValueError, TypeError) as exc:
        print(f"jsocsim: error: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(args))
    except OSError as exc:
        print(f"jsocsim: error: cannot serve on {args['host']}:{args['port']}: {exc}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
