"""The staging history the `auto` runs of `bench.e2e`'s tar ladder start with.

`method: auto` weighs a chunk's files × the round trip to JSOC against the staging a url-tar
export is expected to take, which a daemon learns from the staged exports it has made
(`service.stages.staging_estimate`); a fresh daemon, as every bench run uses, has seen none
and falls back to `tar_staging_seconds`. A deployment has a history, so the bench gives each
`auto` run one: the observations the url-tar runs of the *smaller* steps of the same ladder
recorded in their own databases (what a daemon that had made those exports would know),
written into the auto daemon's fresh database before it starts. Nothing of the step being
timed is in it (its staging is predicted, not looked up); the first step's auto run starts
cold. The history is printed with each auto run.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from service.db.migrate import upgrade_async
from service.db.repo import Repo, StagingSample
from service.settings import Settings
from service.stages.staging_estimate import RECENT, estimate_staging

DB_NAME = "jsoc-bulk.db"  # a daemon's SQLite database in its data dir (the default)


def db_url(data_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{(data_dir / DB_NAME).absolute()}"


async def _read(data_dir: Path) -> list[StagingSample]:
    repo = Repo.from_url(db_url(data_dir))
    try:
        return await repo.staging_samples()
    finally:
        await repo.close()


async def _write(data_dir: Path, samples: list[StagingSample]) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    await upgrade_async(db_url(data_dir))
    repo = Repo.from_url(db_url(data_dir))
    try:
        for sample in reversed(samples):  # oldest first, as they were made
            await repo.add_staging_sample(sample)
    finally:
        await repo.close()


@dataclass
class StagingHistory:
    """Staging observations of one ladder, by step (workload name), in the order made."""

    by_step: dict[str, list[StagingSample]] = field(default_factory=dict)

    def keep(self, step: str, data_dir: Path) -> None:
        """Add what a stopped daemon with this data dir observed."""
        if (data_dir / DB_NAME).exists():
            self.by_step.setdefault(step, []).extend(asyncio.run(_read(data_dir)))

    def seed(self, step: str, data_dir: Path) -> str:
        """Write the other steps' observations (newest first) into a new database in
        `data_dir`; say what the daemon starting on it will expect."""
        samples = [s for name, seen in self.by_step.items() if name != step for s in seen]
        samples = list(reversed(samples))[:RECENT]
        if not samples:
            return "no staging history (a fresh daemon: tar_staging_seconds)"
        asyncio.run(_write(data_dir, samples))
        fallback = Settings.model_fields["tar_staging_seconds"].default
        estimate = estimate_staging([(s.records, s.seconds) for s in samples], fallback)
        seen = ", ".join(f"{s.records} records in {s.seconds:.1f} s" for s in reversed(samples))
        return f"staging history from smaller steps' url-tar runs ({seen}): {estimate.describe()}"


@dataclass(frozen=True)
class StagingLink:
    """A jsoc-bulk tool's part in a ladder's history: ``keep`` what its runs observe, or
    ``seed`` its runs with what the other steps observed."""

    history: StagingHistory
    step: str
    role: str  # "keep" or "seed"
