"""Logging of the daemon: readable text (default) or one JSON object per line, with the job,
export, file and worker a line is about, and secrets removed from every line.

Context comes from context variables that the stages set where they work on something
(``log_context`` around a file's transfer, ``context_with`` for a task about one export):
no call site has to pass it. aiohttp's access lines are logged at DEBUG only.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url

from service.settings import Settings

FIELDS = ("job", "export", "file", "worker")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(where)s: %(message)s"
REDACTED = "***"
_VARS: dict[str, contextvars.ContextVar[str | None]] = {
    name: contextvars.ContextVar(f"jsoc_bulk_log_{name}", default=None) for name in FIELDS}


def _set(fields: dict[str, Any]) -> list[tuple[str, contextvars.Token[str | None]]]:
    return [(name, _VARS[name].set(None if value is None else str(value)))
            for name, value in fields.items()]


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Lines logged inside the block (and by tasks started in it) name these fields."""
    tokens = _set(fields)
    try:
        yield
    finally:
        for name, token in reversed(tokens):
            _VARS[name].reset(token)


def bind(**fields: Any) -> None:
    """Set fields for the rest of the current task (e.g. the worker id of a worker)."""
    _set(fields)


def context_with(**fields: Any) -> contextvars.Context:
    """A copy of the current context with these fields set, for ``create_task(context=)``."""
    context = contextvars.copy_context()
    context.run(_set, fields)
    return context


def current() -> dict[str, str | None]:
    return {name: var.get() for name, var in _VARS.items()}


class ContextFilter(logging.Filter):
    """Adds job/export/file/worker (from the context unless given as ``extra``) and a text
    suffix naming the ones set."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in current().items():
            if getattr(record, name, None) is None:
                setattr(record, name, value)
        where = " ".join(f"{n}={getattr(record, n)}" for n in FIELDS if getattr(record, n))
        record.where = f" [{where}]" if where else ""
        return True


class Redactor:
    """Replaces every known secret in a text."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text


class TextFormatter(logging.Formatter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__(TEXT_FORMAT)
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, job, export, file, worker
    (null when not about one), and ``exception`` with the traceback when there is one."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname, "logger": record.name,
            "message": self.redact(record.getMessage()),
            **{name: getattr(record, name, None) for name in FIELDS},
        }
        if record.exc_info:
            entry["exception"] = self.redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def secrets_of(settings: Settings) -> list[str | None]:
    """What must never appear in a log line: the token and passwords in URLs."""
    found = [settings.token_value, urlsplit(settings.jsoc_url).password]
    if settings.database_url:
        with suppress(Exception):  # an unparsable URL is reported elsewhere
            found.append(make_url(settings.database_url).password)
    return [str(s) if s is not None else None for s in found]


def setup_logging(settings: Settings, stream: TextIO | None = None) -> logging.Handler:
    """Root handler on ``stream`` (stderr) in the chosen format; access lines only at DEBUG.
    Returns the handler."""
    redact = Redactor(secrets_of(settings))
    handler = logging.StreamHandler(stream or sys.stderr)
    formatter = JsonFormatter(redact) if settings.log_format == "json" else TextFormatter(redact)
    handler.setFormatter(formatter)
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    debug = settings.log_level == "DEBUG"
    logging.getLogger("aiohttp.access").setLevel(logging.DEBUG if debug else logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.INFO if debug else logging.WARNING)
    return handler
