"""What every benchmark needs around its servers: a free loopback port, a subprocess stopped
for sure, and a command-line entry point that cleans up on Ctrl-C."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(process: subprocess.Popen[str] | None, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def run_cli(main: Callable[[], object]) -> None:
    """Run a benchmark's main(); Ctrl-C exits 130 after its cleanup ran (finally blocks)."""
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted (servers stopped, temporary files removed)", file=sys.stderr)
        sys.exit(130)
