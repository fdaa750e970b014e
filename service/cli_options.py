"""CLI flags derived from the models: one flag per Settings field and per JobSpec field."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal

from service.safetext import json_text_problems
from service.settings import CONFIG_ENV, Settings, default_text

# JobSpec field -> how its flag is read (tests check this covers every field of the model)
SPEC_FLAGS: dict[str, str] = {
    "series": "text", "start": "text", "end": "text", "recordset": "text",
    "prime_keys": "keyvalue", "wavelengths": "numbers", "where": "append", "segments": "list",
    "cadence": "text", "protocol": "text", "method": "text", "notify": "text",
    "path_template": "text", "priority": "int", "follow": "flag", "lag": "text",
    "check_interval": "text",
}
SPEC_HELP = {
    "series": "series name, e.g. hmi.M_720s",
    "start": "first time, e.g. 2014.01.01_00:00:00_TAI, 2014-01-01T00:00:00Z or "
             "'2014/01/01 00:00' (UTC unless it says TAI)",
    "end": "last time (included, as in sunpy's a.Time(start, end))",
    "recordset": "a raw DRMS record set instead of series/start/end",
    "prime_keys": "prime key filter NAME=VALUE[,VALUE...] (repeatable)",
    "wavelengths": "wavelengths, e.g. 171,193",
    "where": "keyword condition like 'QUALITY = 0' (repeatable; ANDed)",
    "segments": "segments to download, e.g. magnetogram,Bp (default: all)",
    "cadence": "keep one record per interval, e.g. 12m, '10 min', 1h",
    "protocol": "fits or as-is", "method": "auto, url, url_quick or url-tar",
    "notify": "notify email registered with JSOC (default: the server's --email)",
    "path_template": "where files go, e.g. '{series}/{T_REC:%%Y/%%m/%%d}/{filename}'",
    "priority": "higher runs first", "follow": "keep following new data (no --end)",
    "lag": "follow: how far behind now to stay", "check_interval": "follow: how often to check",
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object like '{{\"a.org\": 2}}'; "
                                         f"got {text!r}")
    return value


def _settings_kind(annotation: Any) -> tuple[Any, dict[str, Any]]:
    """argparse ``type``/``choices``/``action`` for a Settings field annotation."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = args[0] if len(args) == 1 else str
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return str, {"choices": [str(a) for a in typing.get_args(annotation)]}
    if origin is dict:
        return _json_object, {}
    if annotation is bool:
        return None, {"action": argparse.BooleanOptionalAction}
    if annotation in (int, float):
        return annotation, {}
    return str, {}


def add_settings_flags(group: argparse._ActionsContainer) -> None:
    """``--config`` and one flag per Settings field (--jsoc-url, …), each with its meaning,
    default and environment variable from the Settings model."""
    group.add_argument("--config", dest="config", metavar="FILE",
                       help=f"TOML file holding any of these settings (env {CONFIG_ENV}); "
                       "see 'jsoc-bulk config example'")
    for name, info in Settings.model_fields.items():
        kind, extra = _settings_kind(info.annotation)
        if kind is not None:
            extra["type"] = kind
        help_text = (f"{info.description} (default: {default_text(name)}; "
                     f"env JSOC_BULK_{name.upper()})")
        group.add_argument(_flag(name), dest=name, help=help_text.replace("%", "%%"), **extra)


def add_spec_flags(group: argparse._ActionsContainer) -> None:
    """One flag per JobSpec field (dest ``spec_<field>``)."""
    for name, kind in SPEC_FLAGS.items():
        dest, help_text = f"spec_{name}", SPEC_HELP.get(name, "")
        metavar = {"prime_keys": "NAME=VALUE", "where": "CONDITION"}.get(name, name.upper())
        if kind == "flag":
            group.add_argument(_flag(name), dest=dest, action="store_true", help=help_text)
        elif kind == "int":
            group.add_argument(_flag(name), dest=dest, type=int, metavar=metavar, help=help_text)
        elif kind in ("append", "list", "numbers", "keyvalue"):
            group.add_argument(_flag(name), dest=dest, action="append", metavar=metavar,
                               help=help_text)
        else:
            group.add_argument(_flag(name), dest=dest, metavar=metavar, help=help_text)


def _number(text: str, flag: str) -> int | float:
    for kind in (int, float):
        with contextlib.suppress(ValueError):
            return kind(text)
    raise ValueError(f"{flag} takes numbers like 171,193; got {text!r}")


def _scalar(text: str) -> int | float | str:
    with contextlib.suppress(ValueError):
        return _number(text, "")
    return text


def _split(values: list[str]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _prime_keys(values: list[str]) -> dict[str, Any]:
    keys: dict[str, Any] = {}
    for item in values:
        name, sep, text = item.partition("=")
        if not sep or not name.strip() or not text.strip():
            raise ValueError(f"--prime-keys takes NAME=VALUE[,VALUE...], e.g. HARPNUM=377; "
                             f"got {item!r}")
        parsed = [_scalar(v) for v in _split([text])]
        keys[name.strip()] = parsed[0] if len(parsed) == 1 else parsed
    return keys


def _flag_value(name: str, kind: str, value: Any) -> Any:
    if kind == "list":
        return _split(value)
    if kind == "numbers":
        return [_number(v, _flag(name)) for v in _split(value)]
    if kind == "keyvalue":
        return _prime_keys(value)
    return value


def read_spec_file(path: str) -> dict[str, Any]:
    """A JSON job spec from a file ('-' = stdin); ValueError with a clear message."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read the job spec file {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"the job spec file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"the job spec file {path} must hold a JSON object")
    return data


def spec_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The job spec body: the file's fields (if any), overridden by the flags given."""
    body = read_spec_file(args.spec_file) if getattr(args, "spec_file", None) else {}
    for name, kind in SPEC_FLAGS.items():
        value = getattr(args, f"spec_{name}", None)
        if value is None or (kind == "flag" and value is False):
            continue
        value = _flag_value(name, kind, value)
        if kind == "keyvalue" and isinstance(body.get(name), dict):
            value = {**body[name], **value}
        body[name] = value
    if not body:
        raise ValueError("no job spec given: pass a JSON file or flags such as --series, "
                         "--start and --end (see jsoc-bulk submit --help)")
    problems = json_text_problems(body)
    if problems:  # checked here too, so the message names the flag or file field
        raise ValueError("the job spec has values the service cannot store: "
                         f"{'; '.join(problems)}; give UTF-8 text without NUL and finite numbers")
    return body
