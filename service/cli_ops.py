"""The operator's CLI commands: ``config show|example`` and ``health``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from service.config_file import example_toml, show_rows
from service.settings import Settings, config_path

EXIT_OK, EXIT_ERROR = 0, 1


def add_ops_commands(command: Callable[[str, str], argparse.ArgumentParser],
                     common: argparse.ArgumentParser) -> None:
    """Register ``config`` and ``health`` with the CLI's command factory."""
    config = command("config", "show the settings in effect, or an example configuration file")
    config_sub = config.add_subparsers(dest="config_command", required=True,
                                       metavar="CONFIG_COMMAND")
    show = config_sub.add_parser(
        "show", parents=[common],
        help="each setting, its value (secrets redacted) and where it came from")
    show.add_argument("--json", action="store_true", help="print the settings as JSON")
    config_sub.add_parser("example", help="print a configuration file documenting every setting")
    health = command("health", "is the daemon alive and ready: database, schema, JSOC")
    health.add_argument("--json", action="store_true", help="print the readiness as JSON")


def cmd_config(args: argparse.Namespace, settings_from_args: Callable[..., Settings]) -> int:
    if args.config_command == "example":
        print(example_toml())
        return EXIT_OK
    settings = settings_from_args(args)
    flags = {name: getattr(args, name) for name in Settings.model_fields if hasattr(args, name)}
    rows = show_rows(settings, flags, config_path(getattr(args, "config", None)))
    if args.json:
        print(json.dumps({name: {"value": value, "source": source}
                          for name, value, source in rows}, indent=2))
        return EXIT_OK
    width = max(len(name) for name, _, _ in rows)
    vwidth = min(48, max(len(value) for _, value, _ in rows))
    for name, value, source in rows:
        print(f"{name:<{width}}  {value:<{vwidth}}  {source}")
    return EXIT_OK


def print_readiness(ready: dict[str, Any]) -> None:
    jsoc = ready.get("jsoc") or {}
    print(f"{ready['status']}  (jsoc-bulk {ready.get('version', '?')})")
    print(f"  database    {ready['database']}")
    print(f"  schema      {ready['migrations']} ({ready.get('schema_revision')}; "
          f"newest {ready.get('expected_revision')})")
    line = jsoc.get("state", "unknown")
    if jsoc.get("state") == "down":
        line += f" since {jsoc.get('since')}: {jsoc.get('last_error')}"
    elif jsoc.get("last_ok_at"):
        line += f" (last answer {jsoc['last_ok_at']})"
    print(f"  jsoc        {line}")
    for c in ready.get("conditions") or []:
        print(f"  worker      {c.get('worker')}: {c.get('condition')} since {c.get('since')}"
              f" under {c.get('path')} ({c.get('error')})")


def cmd_health(args: argparse.Namespace, client: Any) -> int:
    ready = client.ready()
    if args.json:
        print(json.dumps(ready, indent=2, sort_keys=True))
    else:
        print_readiness(ready)
    if ready["status"] == "not_ready":
        print("jsoc-bulk: the daemon is not ready", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK
