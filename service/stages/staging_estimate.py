"""How long a url-tar export is expected to stage, learned from the exports this service made.

Every staged export leaves an observation when it becomes ready (``db.repo_staging``: records,
size, seconds from request to ready, persisted, so a restart keeps them). The newest
``RECENT`` of them, of any staged method and protocol (JSOC runs ``url`` and ``url-tar``
exports through the same export manager and queue, the tar adding one pass over the files;
the emulator stages both alike), give a line ``seconds = base + per_record × records``:

* no observation: ``tar_staging_seconds`` for any size (the setting is the prior);
* record counts that differ (some pair by at least ``SPREAD``×): a Theil–Sen line — the
  median of the slopes between such pairs, and the median intercept — robust to an export
  that waited long in JSOC's queue; neither part below zero;
* one size only (the slope cannot be seen): the base is the smaller of the setting and the
  median time observed, the rest of that time is taken as per record.

The estimate includes the queue and the polling the service actually waited, as a chunk will.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import median

from service.db.repo import Repo
from service.settings import Settings

RECENT = 20  # observations the estimate is made from, newest first
SPREAD = 1.5  # record counts of a pair must differ this much for its slope to count


@dataclass(frozen=True)
class StagingEstimate:
    """Expected staging seconds of an export: ``base + per_record × records``."""

    base: float
    per_record: float
    observations: int  # how many observations it was made from (0: the setting alone)

    def seconds(self, records: int) -> float:
        """Expected seconds from request to ready for an export of ``records`` records."""
        return self.base + self.per_record * max(records, 0)

    def describe(self) -> str:
        """E.g. '20.1 s + 0.021 s/record from 3 exports', for logs."""
        source = (f"from {self.observations} export(s)" if self.observations
                  else "(tar_staging_seconds: nothing observed yet)")
        return f"{self.base:.1f} s + {self.per_record:.3g} s/record {source}"


def estimate_staging(samples: Sequence[tuple[int, float]], fallback: float) -> StagingEstimate:
    """The line through ``(records, seconds)`` observations (see the module docstring);
    ``fallback`` seconds flat when there are none."""
    points = [(n, t) for n, t in samples if n > 0 and t >= 0]
    if not points:
        return StagingEstimate(fallback, 0.0, 0)
    slopes = [(t2 - t1) / (n2 - n1) for n1, t1 in points for n2, t2 in points
              if n2 >= SPREAD * n1]
    if slopes:
        per_record = max(median(slopes), 0.0)
        base = max(median(t - per_record * n for n, t in points), 0.0)
        return StagingEstimate(base, per_record, len(points))
    records, seconds = median(n for n, _ in points), median(t for _, t in points)
    base = min(fallback, seconds)
    return StagingEstimate(base, (seconds - base) / records, len(points))


async def learned_staging(repo: Repo, settings: Settings) -> StagingEstimate:
    """The estimate from the newest observations in the database."""
    samples = await repo.staging_samples(RECENT)
    return estimate_staging([(s.records, s.seconds) for s in samples],
                            settings.tar_staging_seconds)
