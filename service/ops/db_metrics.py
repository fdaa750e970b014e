"""Job-level metrics, read from the database at scrape time (any process can answer), and
the text exposition of one scrape: the process's own instruments plus these.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector

from service.db.repo import Repo
from service.db.repo_metrics import MetricsSnapshot
from service.ops.metrics import PREFIX
from service.settings import Settings
from service.stages.context import download_connection_limit


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, labels=labels)


def job_families(snap: MetricsSnapshot) -> Iterator[Metric]:
    """Jobs by state; files by state and bytes of each active job; queue depth."""
    jobs = _gauge("jobs", "Jobs by state", ["state"])
    for state, n in sorted(snap.jobs_by_state.items()):
        jobs.add_metric([state], n)
    files = _gauge("job_files", "Files of each active job by state (chunk counters)",
                   ["job_id", "state"])
    done = _gauge("job_bytes_done", "Bytes of the done files of each active job", ["job_id"])
    expected = _gauge("job_bytes_expected", "Bytes listed by the exports of each active job",
                      ["job_id"])
    for job_id, figures in sorted(snap.active_jobs.items()):
        for state, n in figures.files.items():
            files.add_metric([job_id, state], n)
        done.add_metric([job_id], figures.bytes_done)
        expected.add_metric([job_id], figures.bytes_expected)
    queue = _gauge("queue_depth", "Work waiting: jobs to plan, chunks waiting for an export, "
                   "files waiting to be downloaded", ["stage"])
    for stage, n in snap.queue.items():
        queue.add_metric([stage], n)
    yield from (jobs, files, done, expected, queue)


def politeness_families(snap: MetricsSnapshot, settings: Settings) -> Iterator[Metric]:
    """Exports by state; pending exports per email and connections per host with limits."""
    exports = _gauge("exports", "Exports by state", ["state"])
    for state, n in sorted(snap.exports_by_state.items()):
        exports.add_metric([state], n)
    pending = _gauge("pending_exports", "Exports pending at JSOC per notify email", ["email"])
    for email, n in sorted(snap.pending_exports.items()):
        pending.add_metric([email], n)
    pending_limit = _gauge("pending_exports_limit", "Pending exports allowed per email", [])
    pending_limit.add_metric([], settings.max_pending_exports_per_email)
    active = _gauge("active_connections", "Download connections (lanes) holding live leases "
                    "per host, all workers together", ["host"])
    limits = _gauge("connection_limit", "Download connections allowed per host", ["host"])
    for host, n in sorted(snap.active_connections.items()):
        active.add_metric([host], n)
        limits.add_metric([host], download_connection_limit(settings, host))
    yield from (exports, pending, pending_limit, active, limits)


def worker_families(snap: MetricsSnapshot, now: datetime) -> Iterator[Metric]:
    age = _gauge("worker_heartbeat_age_seconds", "Seconds since each running worker's last "
                 "heartbeat (from the database)", ["worker"])
    for worker, at in sorted(snap.heartbeats.items()):
        age.add_metric([worker], max(0.0, (now - at).total_seconds()))
    yield age


async def mirror_family(repo: Repo, snap: MetricsSnapshot) -> Metric:
    """behind_seconds of each active mirror (follow job), as GET /jobs/{id} reports it."""
    from service.api.schemas import mirror_status  # the API package imports this module

    behind = _gauge("mirror_behind_seconds", "How far each active mirror is behind JSOC's "
                    "newest data (jsoc_until - covered_until)", ["job_id"])
    for job_id, figures in sorted(snap.active_jobs.items()):
        if figures.follow:
            value = mirror_status(await repo.follow_state(job_id)).behind_seconds
            if value is not None:
                behind.add_metric([job_id], value)
    return behind


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


async def database_families(repo: Repo, settings: Settings) -> list[Metric]:
    """Every job-level family for one scrape."""
    snap = await repo.metrics_snapshot()
    families = [*job_families(snap), *politeness_families(snap, settings),
                *worker_families(snap, datetime.now(UTC)), await mirror_family(repo, snap)]
    return families


def exposition(extra: list[Metric] | None = None) -> bytes:
    """Prometheus text format: this process's instruments, then ``extra`` families."""
    text = generate_latest(REGISTRY)
    if extra:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Fixed(extra))
        text += generate_latest(registry)
    return text
