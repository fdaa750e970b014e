"""The configuration file: precedence flag > environment > file > default, `config show` with
sources and redacted secrets, clear errors, and help texts from the Settings model."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from service import cli
from service.config_file import example_toml
from service.settings import CONFIG_ENV, Settings, SettingsError, default_text, load_settings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(f"JSOC_BULK_{name.upper()}", raising=False)
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_precedence_flag_env_file_default(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(tmp_path / "jsoc-bulk.toml", 'port = 9000\nmax-chunk-records = 77\n'
                   'email = "file@example.org"\nhost_connection_limits = { "m.org" = 3 }\n'
                   'poll_max = 60.0\n')
    monkeypatch.setenv("JSOC_BULK_PORT", "9100")
    monkeypatch.setenv("JSOC_BULK_POLL_MAX", "90")
    s = load_settings(config, max_chunk_records=5, poll_max=None)  # None: flag not given
    assert s.max_chunk_records == 5  # flag over file
    assert s.port == 9100 and s.poll_max == 90  # environment over file
    assert s.email == "file@example.org" and s.host_connection_limits == {"m.org": 3}  # file
    assert s.poll_min == 2.0  # default
    monkeypatch.setenv(CONFIG_ENV, str(config))  # the file named by the environment
    assert load_settings().max_chunk_records == 77
    other = write(tmp_path / "other.toml", "max_chunk_records = 11\n")
    assert load_settings(other).max_chunk_records == 11  # --config over $JSOC_BULK_CONFIG


def test_config_show_says_where_each_value_came_from(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    config = write(tmp_path / "c.toml", 'token = "file-token-123"\nport = 9000\n'
                   'database_url = "postgresql+asyncpg://u:pw-in-file@h/db"\n'
                   "max_chunk_records = 77\n")
    monkeypatch.setenv("JSOC_BULK_PORT", "9100")
    assert cli.main(["config", "show", "--config", str(config), "--max-chunk-records", "5",
                     "--json"]) == 0
    out = capsys.readouterr().out
    shown = json.loads(out)
    assert set(shown) == set(Settings.model_fields)
    assert shown["max_chunk_records"] == {"value": "5", "source": "flag"}
    assert shown["port"] == {"value": "9100", "source": "env"}
    assert shown["token"] == {"value": "***", "source": f"file {config}"}
    assert shown["database_url"]["value"] == "postgresql+asyncpg://u:***@h/db"
    assert shown["poll_min"] == {"value": "2.0", "source": "default"}
    assert shown["download_dir"]["source"] == "default (from data_dir)"
    assert "file-token-123" not in out and "pw-in-file" not in out
    assert cli.main(["config", "show", "--config", str(config)]) == 0
    table = capsys.readouterr().out
    assert re.search(r"^port\s+9100\s+env$", table, re.M), table


@pytest.mark.parametrize(("text", "message"), [
    ("bogus = 1\n", "unknown setting(s) bogus; known settings: jsoc_url"),
    ("port = \n", "is not valid TOML"),
    ('port = "x"\n', "port (env JSOC_BULK_PORT or"),
    ("max_chunk_mb = 200000\n", "max_chunk_mb"),
])
def test_bad_files_get_one_clear_line(tmp_path: Path, text: str, message: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    config = write(tmp_path / "bad.toml", text)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["config", "show", "--config", str(config)])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("jsoc-bulk: error: ") and message in err and "Traceback" not in err
    with pytest.raises(SettingsError, match="cannot read the configuration file"):
        load_settings(tmp_path / "missing.toml")


def test_the_example_documents_every_setting_and_loads(tmp_path: Path) -> None:
    text = example_toml()
    for name, info in Settings.model_fields.items():
        assert f"#{name} = " in text and f"# default: {default_text(name)}" in text
        assert " ".join(str(info.description).split())[:40] in " ".join(
            line.lstrip("# ") for line in text.splitlines())
    active = "\n".join(line[1:] if re.match(r"#\w+ = ", line) else line
                       for line in text.splitlines())
    values = tomllib.loads(active)
    assert set(values) == set(Settings.model_fields)
    settings = load_settings(write(tmp_path / "all.toml", active))
    assert settings.metrics_port == 9470 and settings.token_value
    deploy = ROOT / "deploy" / "jsoc-bulk.toml"
    assert text.split("\n", 4)[4] in deploy.read_text()  # the documentation is the model's
    assert load_settings(deploy).log_format == "json"


def test_help_says_what_each_setting_means_and_its_default(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--config FILE" in help_text and CONFIG_ENV in help_text
    for name, info in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        described = " ".join(str(info.description).split())
        assert flag in help_text, flag
        assert f"{described} (default: {default_text(name)}; env JSOC_BULK_{name.upper()})" \
            in help_text, name
