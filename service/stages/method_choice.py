"""Which export method a chunk uses: the job's own, or for ``method: auto`` url-tar where it wins.

Per-file downloads (``url_quick`` for as-is: no staging at all; ``url`` for fits) pay one
request round trip per file; ``url-tar`` pays JSOC's staging (and building the tar) once and
then streams every file over one response. So url-tar wins for many small files: a chunk of at
least ``tar_min_files`` files (estimated) whose mean size is at most ``tar_max_mean_mb``.
With 50 ms per request, 500 files cost 25 s of round trips, about what JSOC takes to stage an
export; past a few MB per file the round trip is a small part of each transfer while the tar
still has to be built (and held) at JSOC. Both settings are easy to override per deployment.
"""

from __future__ import annotations

from service.jobspec import JobSpec
from service.jsoc.metadata import SeriesMeta
from service.settings import Settings

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
                 est_records: int | None, est_bytes: int | None) -> str:
    """The method to export a chunk with (see the module docstring)."""
    if spec.method != "auto":
        return spec.effective_method
    mean = mean_file_bytes(meta, est_records, est_bytes)
    if (mean is not None and settings.tar_max_mean_mb > 0
            and estimated_files(spec, meta, est_records) >= settings.tar_min_files
            and mean <= settings.tar_max_mean_mb * MB):
        return "url-tar"
    return spec.effective_method
