"""Run a throwaway nginx on 127.0.0.1 that serves one directory (for benchmarks).

`NginxServer(root)` writes a minimal nginx.conf into a temporary prefix directory (pid, logs
and temp paths all inside it; `daemon off`, `master_process off`, one process, sendfile and
keep-alive on), starts `nginx -p PREFIX -c nginx.conf -e PREFIX/error.log` as a child process,
waits until the port accepts connections, and stops it (and removes the prefix) on exit.
Not installed? `nginx_binary()` returns None: callers should say so and skip.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from bench._procs import free_port, stop_process

NGINX_SEARCH_PATH = "/usr/sbin:/usr/local/sbin:/usr/local/nginx/sbin:/usr/bin:/usr/local/bin"
INSTALL_HINT = "install it with `apt-get install nginx-light` (or `nginx`) to run this benchmark"
START_TIMEOUT = 10.0  # seconds

CONFIG_TEMPLATE = """\
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;

events {{
    worker_connections 64;
}}

http {{
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 100000;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;

    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{
            try_files $uri =404;
        }}
    }}
}}
"""


def nginx_binary() -> str | None:
    """Path of the nginx executable, or None when nginx is not installed."""
    return shutil.which("nginx") or shutil.which("nginx", path=NGINX_SEARCH_PATH)


def port_accepts(port: int) -> bool:
    """True if something accepts TCP connections on 127.0.0.1:`port`."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


def write_config(prefix: Path, root: Path, port: int) -> Path:
    """Write `prefix`/nginx.conf serving `root` on 127.0.0.1:`port`; returns its path."""
    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / name).mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(CONFIG_TEMPLATE.format(prefix=prefix, root=root.resolve(), port=port))
    return conf


class NginxServer:
    """nginx serving `root` on a free 127.0.0.1 port; a context manager (`.base_url`)."""

    def __init__(self, root: Path, binary: str | None = None) -> None:
        self.root = Path(root)
        self.binary = binary or nginx_binary()
        if self.binary is None:
            raise FileNotFoundError(f"nginx is not installed; {INSTALL_HINT}")
        self.port = 0
        self.base_url = ""
        self._prefix: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        """Start nginx and wait until it accepts connections; returns the base URL."""
        self._prefix = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
        self.port = free_port()
        conf = write_config(self._prefix, self.root, self.port)
        assert self.binary is not None
        self._process = subprocess.Popen(
            [self.binary, "-p", str(self._prefix), "-c", str(conf),
             "-e", str(self._prefix / "error.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)  # Ctrl-C reaches only us; stop() ends nginx
        try:
            self._wait_until_listening()
        except BaseException:  # including Ctrl-C: never leave nginx or its prefix behind
            self.stop()
            raise
        self.base_url = f"http://127.0.0.1:{self.port}/"
        return self.base_url

    def _wait_until_listening(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while not port_accepts(self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not start on port {self.port}: "
                                   f"{self.error_log() or 'no error log'}")
            time.sleep(0.02)

    @property
    def pid(self) -> int:
        """Process id of the running nginx (single process: it serves the requests)."""
        if self._process is None:
            raise RuntimeError("nginx is not running")
        return self._process.pid

    def error_log(self) -> str:
        """The tail of nginx's error log (empty if there is none)."""
        path = self._prefix / "error.log" if self._prefix else None
        if path is None or not path.is_file():
            return ""
        return path.read_text(errors="replace")[-2000:].strip()

    def stop(self) -> None:
        """Stop nginx (SIGTERM, then SIGKILL) and remove its prefix directory."""
        process, self._process = self._process, None
        stop_process(process, timeout=5)
        if self._prefix is not None:
            shutil.rmtree(self._prefix, ignore_errors=True)
            self._prefix = None

    def __enter__(self) -> NginxServer:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
