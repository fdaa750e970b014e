"""Service configuration (pydantic-settings). Precedence: flags > environment > defaults.

Every field can be set from the environment as ``JSOC_BULK_<FIELD>`` (e.g. ``JSOC_BULK_EMAIL``;
dicts as JSON: ``JSOC_BULK_HOST_CONNECTION_LIMITS='{"example.org": 2}'``). The CLI passes its
flags as keyword arguments to :func:`load_settings`, which drops flags left at ``None``.

The default data directory is ``$XDG_DATA_HOME/jsoc-bulk`` (``~/.local/share/jsoc-bulk``), not
``./var``: a daemon started by systemd, cron or from another shell must find the same database and
files whatever its working directory is.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


class SettingsError(ValueError):
    """Invalid configuration; the message names each bad setting and what is accepted."""


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/jsoc-bulk``, else ``~/.local/share/jsoc-bulk``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "jsoc-bulk"


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    """All service settings. Times are seconds."""

    model_config = SettingsConfigDict(env_prefix="JSOC_BULK_", extra="forbid",
                                      validate_default=True)

    jsoc_url: str = "http://jsoc.stanford.edu/"
    email: str | None = None
    data_dir: Path = Field(default_factory=default_data_dir)
    download_dir: Path | None = None  # where files go; default <data_dir>/files
    database_url: str | None = None  # default sqlite+aiosqlite:///<data_dir>/jsoc-bulk.db
    host: str = "127.0.0.1"
    port: int = Field(8470, ge=0, le=65535)
    token: SecretStr | None = None

    max_pending_exports_per_email: int = Field(1, ge=1)
    max_connections_per_jsoc_host: int = Field(1, ge=1)
    host_connection_limits: dict[str, int] = Field(default_factory=dict)
    global_download_limit: int = Field(4, ge=1)
    download_batch_files: int = Field(
        64, ge=1, description="files a download lane leases per claim")
    download_batch_mb: int = Field(
        256, ge=1, description="about how many MB a download lane leases per claim")
    commit_files: int = Field(
        256, ge=1, description="file outcomes recorded per group commit, at most")
    commit_seconds: float = Field(
        0.2, gt=0, description="longest wait before a file outcome is committed")
    max_chunk_records: int = Field(5_000, ge=1)
    tar_min_files: int = Field(
        200, ge=1, description="method auto: export a chunk as url-tar only when it has at "
        "least this many files (estimated)")
    tar_max_mean_mb: float = Field(
        8.0, ge=0, description="method auto: url-tar only for chunks whose files are at most "
        "this many MB on average (0: never url-tar)")
    tar_staging_seconds: float = Field(
        30.0, ge=0, description="method auto: what url-tar's staging is expected to cost; "
        "url-tar is chosen when the chunk's files times the measured round trip to JSOC "
        "exceed it")
    max_chunk_mb: int = Field(20_000, ge=1, le=100_000)

    poll_min: float = Field(
        2.0, gt=0, description="shortest wait between two status polls of an export (JSOC's "
        "wait hint is followed when it is longer)")
    poll_max: float = Field(300.0, gt=0)
    retry_base: float = Field(2.0, gt=0)
    retry_cap: float = Field(600.0, gt=0)
    retry_max_attempts: int = Field(8, ge=1)
    lease_seconds: float = Field(60.0, gt=0)
    heartbeat_seconds: float = Field(15.0, gt=0)
    shutdown_grace_seconds: float = Field(30.0, ge=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"

    @field_validator("jsoc_url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"jsoc_url must be an http(s) URL like http://jsoc.stanford.edu/; "
                             f"got {v!r}")
        return v.strip() if v.strip().endswith("/") else v.strip() + "/"

    @field_validator("email")
    @classmethod
    def _email(cls, v: str | None) -> str | None:
        if v is not None and not _EMAIL_RE.fullmatch(v.strip()):
            raise ValueError(f"email must be an address registered with JSOC; got {v!r}")
        return v.strip() if v else None

    @field_validator("log_level", mode="before")
    @classmethod
    def _level(cls, v: Any) -> Any:
        if isinstance(v, str) and v.upper() in LOG_LEVELS:
            return v.upper()
        raise ValueError(f"log_level must be one of {', '.join(LOG_LEVELS)}; got {v!r}")

    @field_validator("host_connection_limits")
    @classmethod
    def _limits(cls, v: dict[str, int]) -> dict[str, int]:
        bad = {host: n for host, n in v.items() if n < 1}
        if bad:
            raise ValueError(f"host_connection_limits values must be >= 1; got {bad}")
        return {host.lower(): n for host, n in v.items()}

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        self.data_dir = self.data_dir.expanduser()
        if self.download_dir is None:
            self.download_dir = self.data_dir / "files"
        if self.database_url is None:
            self.database_url = f"sqlite+aiosqlite:///{self.data_dir.absolute()}/jsoc-bulk.db"
        problems = [
            f"{low} ({getattr(self, low)}) must not exceed {high} ({getattr(self, high)})"
            for low, high in (("poll_min", "poll_max"), ("retry_base", "retry_cap"),
                              ("heartbeat_seconds", "lease_seconds"))
            if getattr(self, low) > getattr(self, high)
        ]
        if self.heartbeat_seconds == self.lease_seconds:
            problems.append("heartbeat_seconds must be shorter than lease_seconds")
        if not is_loopback(self.host) and not self.token_value:
            problems.append(
                f"refusing to listen on {self.host} without a token: anyone who can reach it "
                "could control downloads. Set JSOC_BULK_TOKEN (or --token), or bind to 127.0.0.1")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def token_value(self) -> str | None:
        """The token's text (never log this)."""
        return self.token.get_secret_value() if self.token else None

    @property
    def jsoc_host(self) -> str:
        """Host name of the JSOC server (what per-host connection limits key on)."""
        return (urlsplit(self.jsoc_url).hostname or "").lower()

    @property
    def max_chunk_bytes(self) -> int:
        return self.max_chunk_mb * 2**20

    def connection_limit(self, host: str) -> int:
        """Download connections allowed to ``host``: 1 (configurable) for JSOC, else the table."""
        host = host.lower()
        if host == self.jsoc_host:
            return self.max_connections_per_jsoc_host
        return self.host_connection_limits.get(host, self.global_download_limit)


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors(include_url=False):
        name = ".".join(str(p) for p in err["loc"])
        msg = str(err.get("ctx", {}).get("error", err["msg"]))
        if err["type"] == "extra_forbidden":
            msg = f"unknown setting; known settings: {', '.join(Settings.model_fields)}"
        elif err["type"] == "literal_error":
            msg = f"must be one of {err['ctx']['expected']}"
        env = f" (env JSOC_BULK_{name.upper()})" if err["loc"] else ""
        shown = "" if name == "token" else f"; got {err.get('input')!r}"
        if err["type"] == "value_error":
            shown = ""
        lines.append(f"{name}{env}: {msg}{shown}" if name else msg)
    return "invalid settings: " + "; ".join(lines)


def load_settings(**flags: Any) -> Settings:
    """Settings from flags (``None`` = not given), the environment and defaults.

    Raises SettingsError with a clear message instead of a pydantic traceback.
    """
    given = {name: value for name, value in flags.items() if value is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None
