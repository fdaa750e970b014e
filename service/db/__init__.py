"""Persistence of the download service: models, engine, repository, migrations."""

from service.db.engine import (
    DatabaseURLError,
    default_database_url,
    make_engine,
    parse_database_url,
    session_factory,
)
from service.db.migrate import MigrationError, upgrade, upgrade_async
from service.db.repo import (
    UNFENCED,
    ExportClaim,
    FileClaim,
    InvalidTransition,
    JobSummary,
    LeaseLost,
    LeaseToken,
    NotFound,
    PlanClaim,
    PollClaim,
    Repo,
    RepoError,
)

__all__ = [
    "UNFENCED",
    "DatabaseURLError",
    "ExportClaim",
    "FileClaim",
    "InvalidTransition",
    "JobSummary",
    "LeaseLost",
    "LeaseToken",
    "MigrationError",
    "NotFound",
    "PlanClaim",
    "PollClaim",
    "Repo",
    "RepoError",
    "default_database_url",
    "make_engine",
    "parse_database_url",
    "session_factory",
    "upgrade",
    "upgrade_async",
]
