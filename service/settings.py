"""Service configuration (pydantic-settings). Precedence: flags > environment > configuration
file (``--config`` / ``JSOC_BULK_CONFIG``: TOML holding any setting by its name, e.g.
``max_chunk_records = 1000``, dashes allowed) > defaults. ``service.config_file`` shows them.

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
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

CONFIG_ENV = "JSOC_BULK_CONFIG"
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


# defaults computed from other settings, as --help and `config show` describe them
DERIVED_DEFAULTS = {
    "data_dir": "$XDG_DATA_HOME/jsoc-bulk or ~/.local/share/jsoc-bulk",
    "download_dir": "<data_dir>/files",
    "database_url": "sqlite+aiosqlite:///<data_dir>/jsoc-bulk.db",
}
_FILE_VALUES: ContextVar[dict[str, Any] | None] = ContextVar("jsoc_bulk_file", default=None)


class _FileSource(PydanticBaseSettingsSource):
    """The configuration file's values (read by load_settings): below the environment."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return (_FILE_VALUES.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_FILE_VALUES.get() or {})


class Settings(BaseSettings):
    """All service settings. Times are seconds."""

    model_config = SettingsConfigDict(env_prefix="JSOC_BULK_", extra="forbid",
                                      validate_default=True)

    jsoc_url: str = Field(
        "http://jsoc.stanford.edu/", description="JSOC's base URL (CGIs under cgi-bin/ajax/)")
    email: str | None = Field(
        None, description="JSOC-registered notify email, the default of jobs (needed to "
        "export)")
    data_dir: Path = Field(default_factory=default_data_dir,
                           description="directory of the database and state")
    download_dir: Path | None = Field(
        None, description="the root every downloaded file is placed under")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL of the database: sqlite+aiosqlite:///… or "
        "postgresql+asyncpg://user:password@host/db (the password is never shown)")
    host: str = Field("127.0.0.1", description="address the API listens on; a non-loopback "
                      "address requires a token")
    port: int = Field(8470, ge=0, le=65535, description="port the API listens on")
    token: SecretStr | None = Field(
        None, description="bearer token every API request must send (never logged or shown)")

    max_pending_exports_per_email: int = Field(
        1, ge=1, description="exports pending at JSOC per notify email, all workers together "
        "(JSOC's rule; raise only for whitelisted addresses)")
    max_connections_per_jsoc_host: int = Field(
        1, ge=1, description="download connections to JSOC's host, all workers together "
        "(JSOC's rule)")
    host_connection_limits: dict[str, int] = Field(
        default_factory=dict, description="download connections allowed to other hosts, as "
        "JSON, e.g. '{\"mirror.example.org\": 4}'")
    global_download_limit: int = Field(
        4, ge=1, description="concurrent downloads in one worker process")
    download_batch_files: int = Field(
        64, ge=1, description="files a download lane leases per claim (then the next job "
        "gets its turn)")
    download_batch_mb: int = Field(
        256, ge=1, description="about how many MB a download lane leases per claim")
    commit_files: int = Field(
        256, ge=1, description="file outcomes recorded per group commit, at most")
    commit_seconds: float = Field(
        0.2, gt=0, description="longest wait before a file outcome is committed")
    max_chunk_records: int = Field(5_000, ge=1, description="records in one export, at most")
    tar_min_files: int = Field(
        200, ge=1, description="method auto: export a chunk as url-tar only when it has at "
        "least this many files (estimated)")
    tar_max_mean_mb: float = Field(
        8.0, ge=0, description="method auto: url-tar only for chunks whose files are at most "
        "this many MB on average (0: never url-tar)")
    tar_staging_seconds: float = Field(
        30.0, ge=0, description="method auto: what url-tar's staging is expected to cost "
        "until the service has seen a staged export (then it is learned from the exports it "
        "made); url-tar is chosen when the chunk's files times the measured round trip to "
        "JSOC exceed the expected staging")
    max_chunk_mb: int = Field(20_000, ge=1, le=100_000, description="MB in one export, at "
                              "most (JSOC's hard limit is 100,000)")

    poll_min: float = Field(
        2.0, gt=0, description="shortest wait between two status polls of an export, seconds "
        "(JSOC's wait hint is followed when it is longer)")
    poll_max: float = Field(300.0, gt=0, description="longest wait between two status "
                            "polls of an export, seconds")
    retry_base: float = Field(2.0, gt=0, description="first retry delay, seconds (doubling, "
                              "with full jitter)")
    retry_cap: float = Field(600.0, gt=0, description="longest retry delay, seconds")
    retry_max_attempts: int = Field(8, ge=1, description="attempts per file before it fails")
    lease_seconds: float = Field(60.0, gt=0, description="how long a worker's claim on work "
                                 "holds without renewal, seconds")
    heartbeat_seconds: float = Field(15.0, gt=0, description="seconds between a worker's "
                                     "heartbeats (which renew its leases)")
    shutdown_grace_seconds: float = Field(30.0, ge=0, description="on SIGTERM, seconds "
                                          "in-flight work gets before it is checkpointed")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", description="log level; HTTP access lines are logged at DEBUG only")
    log_format: Literal["text", "json"] = Field(
        "text", description="log lines as readable text, or one JSON object per line (time, "
        "level, logger, message, job, export, file, worker)")
    metrics_public: bool = Field(
        False, description="serve /metrics without the token (health and ready never need it)")
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="also serve /metrics, /api/v1/health and "
        "/api/v1/ready of this process on this port (for --workers-only processes, which "
        "have no API); metrics of the jobs come from the API's /metrics")

    @classmethod
    def settings_customise_sources(
            cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags (keyword arguments) > environment > configuration file > defaults."""
        return init_settings, env_settings, _FileSource(settings_cls)

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


def _describe(exc: ValidationError, path: Path | None = None) -> str:
    lines = []
    for err in exc.errors(include_url=False):
        name = ".".join(str(p) for p in err["loc"])
        msg = str(err.get("ctx", {}).get("error", err["msg"]))
        if err["type"] == "extra_forbidden":
            msg = f"unknown setting; known settings: {', '.join(Settings.model_fields)}"
        elif err["type"] == "literal_error":
            msg = f"must be one of {err['ctx']['expected']}"
        env = f" (env JSOC_BULK_{name.upper()}" + (f" or {path}" if path else "") + ")" \
            if err["loc"] else ""
        shown = "" if name == "token" else f"; got {err.get('input')!r}"
        if err["type"] == "value_error":
            shown = ""
        lines.append(f"{name}{env}: {msg}{shown}" if name else msg)
    return "invalid settings: " + "; ".join(lines)


def default_text(name: str) -> str:
    """A setting's default as --help and the configuration file's comments show it."""
    if name in DERIVED_DEFAULTS:
        return DERIVED_DEFAULTS[name]
    default = Settings.model_fields[name].get_default(call_default_factory=True)
    return "none" if default is None else str(default).lower() if isinstance(
        default, bool) else str(default)


def config_path(flag: str | Path | None) -> Path | None:
    """The configuration file: the flag, else $JSOC_BULK_CONFIG, else none."""
    chosen = flag if flag not in (None, "") else os.environ.get(CONFIG_ENV) or None
    return Path(chosen).expanduser() if chosen is not None else None


def read_config(path: Path) -> dict[str, Any]:
    """The settings in a TOML file; SettingsError naming the file and what is wrong."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"cannot read the configuration file {path}: "
                            f"{exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"the configuration file {path} is not valid TOML: {exc}") from None
    values = {key.replace("-", "_"): value for key, value in data.items()}
    unknown = sorted(set(values) - set(Settings.model_fields))
    if unknown:
        raise SettingsError(f"{path}: unknown setting(s) {', '.join(unknown)}; known settings: "
                            f"{', '.join(Settings.model_fields)}")
    return values


def load_settings(config: str | Path | None = None, **flags: Any) -> Settings:
    """Settings from flags (``None`` = not given), the environment, the configuration file
    (``config``, else ``$JSOC_BULK_CONFIG``) and defaults.

    Raises SettingsError with a clear message instead of a pydantic traceback.
    """
    path = config_path(config)
    given = {name: value for name, value in flags.items() if value is not None}
    token = _FILE_VALUES.set(read_config(path) if path else {})
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise SettingsError(_describe(exc, path)) from None
    finally:
        _FILE_VALUES.reset(token)
