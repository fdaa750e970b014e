"""Settings: defaults, precedence (flags > environment > defaults), validation messages."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from service.settings import Settings, SettingsError, is_loopback, load_settings

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No JSOC_BULK_* variables from the outside; a private XDG data home."""
    import os

    for name in list(os.environ):
        if name.startswith("JSOC_BULK_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


def test_defaults(tmp_path: Path) -> None:
    s = load_settings()
    assert s.jsoc_url == "http://jsoc.stanford.edu/" and s.jsoc_host == "jsoc.stanford.edu"
    assert s.data_dir == tmp_path / "xdg" / "jsoc-bulk"
    assert s.database_url == f"sqlite+aiosqlite:///{s.data_dir}/jsoc-bulk.db"
    assert s.download_dir == s.data_dir / "files"
    assert (s.host, s.port, s.token) == ("127.0.0.1", 8470, None)
    assert (s.max_pending_exports_per_email, s.max_connections_per_jsoc_host) == (1, 1)
    assert s.max_chunk_bytes == s.max_chunk_mb * 2**20 < 100_000 * 2**20


def test_home_fallback_without_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert load_settings().data_dir == tmp_path / ".local" / "share" / "jsoc-bulk"


def test_precedence_flags_over_env_over_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JSOC_BULK_PORT", "9001")
    monkeypatch.setenv("JSOC_BULK_EMAIL", "env@example.org")
    monkeypatch.setenv("JSOC_BULK_HOST_CONNECTION_LIMITS", '{"Data.Example.org": 3}')
    s = load_settings(port=9002, email=None)  # None = flag not given
    assert s.port == 9002 and s.email == "env@example.org"
    assert s.connection_limit("data.example.org") == 3
    assert s.connection_limit("jsoc.stanford.edu") == 1
    assert s.connection_limit("other.org") == s.global_download_limit
    assert load_settings().port == 9001


def test_url_normalised_and_checked() -> None:
    assert load_settings(jsoc_url="http://127.0.0.1:8080").jsoc_url == "http://127.0.0.1:8080/"
    assert load_settings(jsoc_url="http://127.0.0.1:8080/x/").jsoc_url == "http://127.0.0.1:8080/x/"
    with pytest.raises(SettingsError, match="jsoc_url must be an http"):
        load_settings(jsoc_url="ftp://jsoc.stanford.edu/")


def test_data_dir_drives_database_url(tmp_path: Path) -> None:
    s = load_settings(data_dir=tmp_path / "d")
    assert s.database_url == f"sqlite+aiosqlite:///{tmp_path}/d/jsoc-bulk.db"
    pg = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
    assert load_settings(data_dir=tmp_path, database_url=pg).database_url == pg


def test_non_loopback_needs_token() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(host="0.0.0.0")
    assert "refusing to listen on 0.0.0.0 without a token" in str(info.value)
    assert "JSOC_BULK_TOKEN" in str(info.value)
    assert load_settings(host="0.0.0.0", token="s3cret").token_value == "s3cret"
    for host in ("localhost", "::1", "127.0.0.2"):
        assert is_loopback(host) and load_settings(host=host).host == host
    assert not is_loopback("10.0.0.1") and not is_loopback("example.org")


def test_token_is_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    s = load_settings(token="very-secret-value")
    logging.getLogger("test").warning("settings: %s %r", s, s)
    assert "very-secret-value" not in caplog.text
    assert "very-secret-value" not in s.model_dump_json()
    with pytest.raises(SettingsError) as info:
        load_settings(token="very-secret-value", port="nope")
    assert "very-secret-value" not in str(info.value)


@pytest.mark.parametrize(("flags", "fragment"), [
    ({"log_level": "loud"}, "log_level must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    ({"poll_min": 10, "poll_max": 1}, "poll_min (10.0) must not exceed poll_max (1.0)"),
    ({"heartbeat_seconds": 60, "lease_seconds": 60}, "shorter than lease_seconds"),
    ({"retry_base": 100, "retry_cap": 10}, "retry_base (100.0) must not exceed retry_cap"),
    ({"port": "http"}, "port (env JSOC_BULK_PORT)"),
    ({"max_chunk_mb": 200_000}, "max_chunk_mb"),
    ({"host_connection_limits": {"a.org": 0}}, "host_connection_limits values must be >= 1"),
    ({"email": "not-an-email"}, "email must be an address"),
    ({"colour": "blue"}, "colour (env JSOC_BULK_COLOUR): unknown setting; known settings:"),
])
def test_bad_settings_get_clear_messages(flags: dict, fragment: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(**flags)
    assert fragment in str(info.value)
    assert "Traceback" not in str(info.value)


def test_log_level_case_insensitive_and_direct_construction() -> None:
    assert load_settings(log_level="debug").log_level == "DEBUG"
    assert Settings(port=1).port == 1
