"""Operator files: the systemd unit runs what the CLI accepts with the shipped configuration,
the Grafana dashboard uses only metrics that exist, every metric is documented, and the README
has its "Operating it" section."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client.registry import REGISTRY

import service.stages.context  # noqa: F401 - registers the process collector's sources
from service.cli import build_parser
from service.db.repo_metrics import MetricsSnapshot
from service.ops import metrics
from service.ops.db_metrics import job_families, politeness_families, worker_families
from service.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "jsoc-bulk.service"
DASHBOARD = ROOT / "deploy" / "grafana-dashboard.json"
DOCS = ROOT / "docs" / "operating.md"
EXTRA_FAMILIES = ("jsoc_bulk_mirror_behind_seconds", "jsoc_bulk_database_up")


def unit_entries() -> dict[str, list[str]]:
    """``Key=value`` lines of the unit (repeatable keys kept in order), comments dropped."""
    entries: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            entries.setdefault(key.strip(), []).append(value.strip())
    return entries


def exported_names() -> set[str]:
    """Every jsoc_bulk_* name a scrape can show (counters with their _total)."""
    families = [f for f in REGISTRY.collect() if f.name.startswith("jsoc_bulk_")]
    snap = MetricsSnapshot()
    families += [*job_families(snap), *politeness_families(snap, Settings()),
                 *worker_families(snap, datetime.now(UTC))]
    names = {f.name + "_total" if f.type == "counter" else f.name for f in families}
    return names | set(EXTRA_FAMILIES)


@pytest.mark.unit
def test_systemd_unit_runs_serve_with_the_shipped_configuration() -> None:
    entries = unit_entries()
    argv = shlex.split(entries["ExecStart"][0])
    assert Path(argv[0]).name == "jsoc-bulk"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "serve" and args.db_upgrade
    env = dict(item.split("=", 1) for item in entries["Environment"])
    assert Path(env["JSOC_BULK_CONFIG"]).name == "jsoc-bulk.toml"
    shipped = load_settings(ROOT / "deploy" / "jsoc-bulk.toml")
    assert str(shipped.data_dir) == "/var/lib/" + entries["StateDirectory"][0]
    assert float(entries["TimeoutStopSec"][0]) > shipped.shutdown_grace_seconds
    assert entries["KillSignal"] == ["SIGTERM"] and entries["User"][0] != "root"


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed: the unit's syntax is not verified")
    script = Path(sys.executable).parent / "jsoc-bulk"
    text = UNIT.read_text().replace("/opt/jsoc-bulk/bin/jsoc-bulk", str(script))
    with_real_path = tmp_path / "jsoc-bulk.service"
    with_real_path.write_text(text)
    done = subprocess.run([analyze, "verify", str(with_real_path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "jsoc-bulk.service" not in done.stderr, done.stderr  # no warning about the unit


@pytest.mark.unit
def test_every_metric_is_documented() -> None:
    documented = set(re.findall(r"`(jsoc_bulk_\w+)`", DOCS.read_text()))
    names = exported_names()
    assert names - documented == set()  # every metric is documented
    assert documented - names == set()  # and nothing documented is gone


@pytest.mark.unit
def test_grafana_dashboard_uses_metrics_that_exist() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    names = exported_names()
    used = set()
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            for name in re.findall(r"jsoc_bulk_\w+", target["expr"]):
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                assert name in names or base in names, (panel["title"], name)
                used.add(base)
    # every politeness figure and its limit are charted
    assert {"jsoc_bulk_active_connections", "jsoc_bulk_connection_limit",
            "jsoc_bulk_pending_exports", "jsoc_bulk_pending_exports_limit"} <= used
    assert len(used) >= len(names) - 2, sorted(names - used)


@pytest.mark.unit
def test_readme_has_an_operating_section() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Operating it", 1)[1].split("\n## ", 1)[0]
    for heading in ("Metrics", "Dashboard", "Health", "Logs", "Configuration", "systemd"):
        assert f"### {heading}" in section, heading
    assert metrics.PREFIX + "files_downloaded_total" in section
