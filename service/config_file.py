"""What ``jsoc-bulk config`` shows about the settings: ``config show`` prints each setting, its
value (secrets redacted) and where it came from (flag > environment > file > default);
``config example`` prints a configuration file documenting every setting, from the
descriptions of the Settings model. The file itself is read by ``service.settings``.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from service.settings import DERIVED_DEFAULTS, Settings, default_text, read_config

ENV_PREFIX = "JSOC_BULK_"
Source = Literal["flag", "env", "file", "default"]
# example values of settings without a default worth showing
EXAMPLES: dict[str, Any] = {
    "email": "you@example.org", "data_dir": "/var/lib/jsoc-bulk", "download_dir": "/srv/sdo",
    "database_url": "postgresql+asyncpg://jsoc:PASSWORD@dbhost:5432/jsoc",
    "token": "a-long-random-string", "metrics_port": 9470,
    "host_connection_limits": {"mirror.example.org": 4},
}


def sources(flags: dict[str, Any], config: Path | None) -> dict[str, Source]:
    """Where each setting's value came from (the same precedence as load_settings)."""
    in_file = read_config(config) if config else {}
    env = {key.upper() for key in os.environ}
    found: dict[str, Source] = {}
    for name in Settings.model_fields:
        if flags.get(name) is not None:
            found[name] = "flag"
        elif f"{ENV_PREFIX}{name.upper()}" in env:
            found[name] = "env"
        elif name in in_file:
            found[name] = "file"
        else:
            found[name] = "default"
    return found


def shown(name: str, value: Any) -> str:
    """A setting's value for display: secrets redacted, passwords in URLs hidden."""
    if value is None:
        return "(not set)"
    if isinstance(value, SecretStr):
        return "***"
    if name == "database_url":
        try:
            return make_url(str(value)).render_as_string(hide_password=True)
        except ArgumentError:
            return "(not a database URL; not shown)"
    if name == "jsoc_url":
        return _hide_userinfo(str(value))
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _hide_userinfo(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    _userinfo, at, host = rest.partition("@")
    return f"{scheme}{sep}***@{host}" if at else url


def show_rows(settings: Settings, flags: dict[str, Any],
              config: Path | None) -> list[tuple[str, str, str]]:
    """(setting, shown value, source) for every setting."""
    where = sources(flags, config)
    rows = []
    for name in Settings.model_fields:
        source = where[name]
        label = f"file {config}" if source == "file" else source
        if source == "default" and name in DERIVED_DEFAULTS:
            label = "default (from data_dir)" if name != "data_dir" else "default"
        rows.append((name, shown(name, getattr(settings, name)), label))
    return rows


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {v}" for k, v in value.items()) + " }"
    return json.dumps(str(value))


def example_toml() -> str:
    """A configuration file documenting every setting (all commented out: the defaults)."""
    lines = ["# jsoc-bulk configuration (TOML). Precedence: flag > environment (JSOC_BULK_<NAME>)",
             "# > this file > default. Uncomment and change what you need; "
             "`jsoc-bulk config show`", "# prints the values in effect and where each came from.",
             ""]
    for name, info in Settings.model_fields.items():
        default = info.get_default(call_default_factory=True)
        value = EXAMPLES.get(name, default)
        if value is None or (name in DERIVED_DEFAULTS and name not in EXAMPLES):
            value = EXAMPLES.get(name, DERIVED_DEFAULTS.get(name, ""))
        lines += [f"# {text}" for text in textwrap.wrap(str(info.description), 96)]
        lines += [f"# default: {default_text(name)}",
                  f"# env {ENV_PREFIX}{name.upper()}, flag --{name.replace('_', '-')}",
                  f"#{name} = {_toml_value(value)}", ""]
    return "\n".join(lines)
