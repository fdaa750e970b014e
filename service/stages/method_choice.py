"""Which export method a chunk uses: the job's own, or for ``method: auto`` url-tar where it wins.

Per-file downloads (``url_quick`` for as-is: no staging at all; ``url`` for fits) pay one
request round trip per file; ``url-tar`` pays JSOC's staging (and building the tar) once and
then streams every file over one response. So url-tar wins for many small files far away: a
chunk of at least ``tar_min_files`` files (estimated), of at most ``tar_max_mean_mb`` on
average, whose round trips (files × the round trip measured to JSOC) would cost more than
url-tar's staging is expected to — learned from the staged exports this service made
(``staging_estimate``; ``tar_staging_seconds`` until it has seen one). On a short path per-file
requests win whatever the count: 1,000 files × 1 ms is far less than any staging; at 50 ms per
request the same 1,000 files spend 50 s waiting. bench/e2e.py (workload ``tar``) shows the
crossover. This module is the one place the choice is made.
"""

from __future__ import annotations

import logging

from service.jobspec import JobSpec
from service.jsoc.metadata import SeriesMeta
from service.settings import Settings
from service.stages.context import StageContext
from service.stages.staging_estimate import StagingEstimate, learned_staging

log = logging.getLogger(__name__)

MB = 1 << 20


def estimated_files(spec: JobSpec, meta: SeriesMeta, est_records: int | None) -> int:
    """Files of a chunk: its records times the segments asked for (all when none listed)."""
    segments = len(spec.segments) if spec.segments else len(meta.segment_names)
    return max(est_records or 0, 0) * max(segments, 1)


def mean_file_bytes(meta: SeriesMeta, est_records: int | None,
                    est_bytes: int | None) -> float | None:
    """Mean file size of a chunk: a record's size (all its segments, as JSOC's ``*size*``)
    over the series' segments; None when the planner had no estimate."""
    if not est_records or not est_bytes:
        return None
    return est_bytes / (est_records * max(len(meta.segment_names), 1))


def chunk_method(spec: JobSpec, meta: SeriesMeta, settings: Settings, *,
                 est_records: int | None, est_bytes: int | None,
                 round_trip: float | None, staging: StagingEstimate) -> str:
    """The method to export a chunk with (see the module docstring)."""
    if spec.method != "auto":
        return spec.effective_method
    mean = mean_file_bytes(meta, est_records, est_bytes)
    files = estimated_files(spec, meta, est_records)
    if (mean is not None and round_trip is not None and settings.tar_max_mean_mb > 0
            and files >= settings.tar_min_files and mean <= settings.tar_max_mean_mb * MB
            and files * round_trip >= staging.seconds(est_records or 0)):
        return "url-tar"
    return spec.effective_method


async def method_for_chunk(ctx: StageContext, spec: JobSpec, meta: SeriesMeta, *,
                           chunk_id: int, est_records: int | None,
                           est_bytes: int | None) -> str:
    """``chunk_method`` with the round trip measured to JSOC and the staging learned so far
    (looked up only for ``auto``); an ``auto`` choice is logged with its reasons."""
    if spec.method != "auto":
        return spec.effective_method
    staging = await learned_staging(ctx.repo, ctx.settings)
    round_trip = ctx.jsoc.round_trip
    method = chunk_method(spec, meta, ctx.settings, est_records=est_records,
                          est_bytes=est_bytes, round_trip=round_trip, staging=staging)
    files = estimated_files(spec, meta, est_records)
    waits = "unknown" if round_trip is None else f"{files * round_trip:.1f} s"
    log.info("chunk %s: method auto -> %s (%d files, round trips %s, url-tar staging "
             "expected %.1f s: %s)", chunk_id, method, files, waits,
             staging.seconds(est_records or 0), staging.describe())
    return method
