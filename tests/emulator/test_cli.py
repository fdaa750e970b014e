"""`python -m jsocsim` as a real subprocess: prints its URL, serves, exits 0 on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from tests.emulator.conftest import EMAIL


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
