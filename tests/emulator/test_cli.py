"""`python -m jsocsim` as a real subprocess: prints its URL, serves, exits 0 on SIGTERM; the
latency and staging flags and how the staging model fills the ones not given."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from jsocsim.__main__ import STAGING_FLAGS, apply_staging_model, build_parser
from jsocsim.config import FLAT_STAGING, JSOC_STAGING, make_config
from tests.emulator.helpers import EMAIL


def read_line_with_deadline(proc: subprocess.Popen[str], timeout: float) -> str:
    """The first stdout line of `proc`, or fail after `timeout` seconds."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    assert lines, f"no output from jsocsim within {timeout} s"
    if not lines[0]:
        proc.wait(timeout=10)
        raise AssertionError(f"jsocsim exited early: {proc.stderr.read()[-2000:]}")
    return lines[0]


def test_cli_serves_until_sigterm(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "jsocsim", "--host", "127.0.0.1", "--port", "0",
           "--data-dir", str(tmp_path), "--email", EMAIL, "--email", "second@example.org",
           "--staging-delay", "0.5", "--file-size", "16K", "--fault", "slow_rate=0",
           "--fault", "outages=1000:10"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = read_line_with_deadline(proc, 60)
        assert line.startswith("jsocsim listening on http://127.0.0.1:")
        base = line.split()[-1]
        with urllib.request.urlopen(base + "cgi-bin/ajax/show_series?filter=hmi", timeout=10) as r:
            body = json.loads(r.read().decode("latin1"))
        assert body["status"] == 0 and body["n"] > 0
        check = base + "cgi-bin/ajax/checkAddress.sh?address=second%2540example.org&checkonly=1"
        with urllib.request.urlopen(check, timeout=10) as r:
            assert json.loads(r.read())["status"] == 2
        with urllib.request.urlopen(base + "_sim/faults", timeout=10) as r:
            assert json.loads(r.read())["config"]["outages"] == [[1000.0, 10.0]]
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert time.monotonic() - started < 30
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_rejects_bad_options_clearly(tmp_path: Path) -> None:
    bad_fault = subprocess.run(
        [sys.executable, "-m", "jsocsim", "--data-dir", str(tmp_path), "--fault", "nope=1"],
        capture_output=True, text=True, timeout=60)
    assert bad_fault.returncode == 2
    assert "NAME=VALUE" in bad_fault.stderr and "Traceback" not in bad_fault.stderr
    bad_rate = subprocess.run(
        [sys.executable, "-m", "jsocsim", "--data-dir", str(tmp_path), "--fault",
         "reset_rate=3"], capture_output=True, text=True, timeout=60)
    assert bad_rate.returncode == 2 and "reset_rate" in bad_rate.stderr
    assert "Traceback" not in bad_rate.stderr


def test_cli_latency_and_staging_flags(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "jsocsim", "--data-dir", str(tmp_path), "--email", EMAIL,
           "--latency", "0.05", "--staging-delay", "3", "--staging-per-record", "0.25",
           "--staging-per-mb", "0.01", "--staging-slots", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base = read_line_with_deadline(proc, 60).split()[-1]
        with urllib.request.urlopen(base + "_sim/config", timeout=10) as r:
            config = json.loads(r.read())
        assert config["latency"] == 0.05 and config["staging_delay"] == 3.0
        assert config["staging_per_record"] == 0.25 and config["staging_per_mb"] == 0.01
        assert config["staging_slots"] == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def cli_options(*argv: str) -> dict[str, Any]:
    """The EmulatorConfig options the CLI derives from `argv` (staging model applied)."""
    args = vars(build_parser().parse_args(["--data-dir", "x", *argv]))
    apply_staging_model(args)
    return {name: args[name] for name in (*STAGING_FLAGS, "latency")}


@pytest.mark.unit
def test_cli_staging_model_defaults() -> None:
    assert cli_options() == {**JSOC_STAGING, "latency": 0.0}  # realistic unless told otherwise
    assert cli_options("--staging-delay", "0.5") == {**FLAT_STAGING, "staging_delay": 0.5,
                                                     "latency": 0.0}
    assert cli_options("--staging-model", "jsoc", "--staging-slots", "1") == {
        **JSOC_STAGING, "staging_slots": 1, "latency": 0.0}
    assert cli_options("--staging-model", "flat", "--latency", "0.05") == {
        **FLAT_STAGING, "latency": 0.05}
    for bad in ({"staging_slots": -1}, {"latency": -0.1}, {"staging_per_mb": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            make_config(**bad)
