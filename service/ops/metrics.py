"""The worker process's own Prometheus instruments (prometheus-client, default registry).

Everything here is observed at the granularity of a group commit, a claim, a CGI call, a
transaction or a heartbeat, never per chunk of bytes, so the download hot path stays lean.
Job-level figures (files, exports, queue depth, politeness) are not here: they are read from
the database at scrape time (``service.ops.db_metrics``) so any process can answer.

Every metric name is documented in docs/operating.md; a test checks the list stays complete.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections import deque
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

PREFIX = "jsoc_bulk_"
RATE_WINDOW_SECONDS = 60.0
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TX_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
BREAKER_STATES = ("closed", "half_open", "open")

FILES_DOWNLOADED = Counter(
    PREFIX + "files_downloaded", "Files recorded done by this process (fetched, linked from a "
    "stored copy or adopted), by job and download host", ["job_id", "host"])
BYTES_DOWNLOADED = Counter(
    PREFIX + "downloaded_bytes", "Bytes of the files recorded done by this process, by job "
    "and download host", ["job_id", "host"])
BYTES_REFETCHED = Counter(
    PREFIX + "refetched_bytes", "Bytes already downloaded once that had to be fetched again "
    "(the server ignored Range or the file changed, or a .part could not be resumed), by host",
    ["host"])
RETRIES = Counter(
    PREFIX + "retries", "Retries scheduled after a transient failure, by stage "
    "(download, submit, poll, plan)", ["stage"])
FILE_FAILURES = Counter(
    PREFIX + "file_failures", "Files given up on (permanent error or out of attempts), by host",
    ["host"])
JSOC_LATENCY = Histogram(
    PREFIX + "jsoc_request_seconds", "Time to JSOC's answer (headers and body) of a CGI call, "
    "by CGI and op", ["cgi", "op"], buckets=LATENCY_BUCKETS)
JSOC_ERRORS = Counter(
    PREFIX + "jsoc_request_errors", "CGI calls that failed, by CGI and kind (timeout, "
    "connection, http_<code>, bad_reply, status_<n> for a jsoc_info error status)",
    ["cgi", "kind"])
EXPORT_REPLIES = Counter(
    PREFIX + "export_replies", "jsoc_fetch replies (exp_request, exp_status) by op and JSOC "
    "status code", ["op", "status"])
DB_TX_SECONDS = Histogram(
    PREFIX + "db_transaction_seconds", "Duration of a repository transaction (including its "
    "retries after lost deadlocks), by operation", ["operation"], buckets=TX_BUCKETS)
HEARTBEATS = Counter(
    PREFIX + "worker_heartbeats", "Successful heartbeats of the workers of this process",
    ["worker"])
HEARTBEAT_FAILURES = Counter(
    PREFIX + "worker_heartbeat_failures", "Heartbeats that could not be written", ["worker"])
LAST_HEARTBEAT = Gauge(
    PREFIX + "worker_last_heartbeat_timestamp_seconds", "Unix time of the last successful "
    "heartbeat of each worker of this process", ["worker"])


class RateWindow:
    """Bytes recorded per host over the last minute, for the download-rate gauge."""

    def __init__(self, window: float = RATE_WINDOW_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window, self.clock = window, clock
        self.samples: deque[tuple[float, str, int]] = deque()
        self.started = clock()

    def add(self, host: str, nbytes: int) -> None:
        self.samples.append((self.clock(), host, nbytes))
        self._trim()

    def _trim(self) -> None:
        cutoff = self.clock() - self.window
        while self.samples and self.samples[0][0] < cutoff:
            self.samples.popleft()

    def rates(self) -> dict[str, float]:
        """Bytes per second by host, over the window (or the time since start, if shorter)."""
        self._trim()
        span = max(1.0, min(self.window, self.clock() - self.started))
        totals: Tally[str] = Tally()
        for _at, host, nbytes in self.samples:
            totals[host] += nbytes
        return {host: total / span for host, total in totals.items()}


RATES = RateWindow()


def record_downloads(done: Iterable[tuple[str, str, int]]) -> None:
    """Files recorded done in one group commit: (job, host, bytes) each, summed first."""
    files: Tally[tuple[str, str]] = Tally()
    sizes: Tally[tuple[str, str]] = Tally()
    for job, host, nbytes in done:
        files[(job, host)] += 1
        sizes[(job, host)] += nbytes
    for key, n in files.items():
        FILES_DOWNLOADED.labels(*key).inc(n)
        BYTES_DOWNLOADED.labels(*key).inc(sizes[key])
        RATES.add(key[1], sizes[key])


class ProcessCollector(Collector):
    """Scrape-time gauges of in-process state: circuit breakers and the download rate."""

    def __init__(self) -> None:
        self.breaker_sources: list[Callable[[], dict[str, str]]] = []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        rate = GaugeMetricFamily(PREFIX + "download_rate_bytes_per_second",
                                 "Bytes per second of files recorded done over the last minute, "
                                 "by download host", labels=["host"])
        for host, value in sorted(RATES.rates().items()):
            rate.add_metric([host], value)
        yield rate
        breakers = GaugeMetricFamily(PREFIX + "circuit_breaker_state",
                                     "1 for the current state of each host's circuit breaker "
                                     "(closed, half_open, open)", labels=["host", "state"])
        for source in list(self.breaker_sources):
            for host, current in sorted(source().items()):
                for state in BREAKER_STATES:
                    breakers.add_metric([host, state], 1.0 if current == state else 0.0)
        yield breakers


PROCESS = ProcessCollector()
REGISTRY.register(PROCESS)
