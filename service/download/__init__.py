"""Resumable downloads: fetch, verification, backoff and breakers, safe destination paths."""

from service.download.errors import DownloadError
from service.download.fetch import (
    FetchError,
    FetchPermanentError,
    FetchResult,
    FetchRetryableError,
    FetchVerifyError,
    fetch_file,
)
from service.download.limits import (
    BreakerState,
    CircuitBreaker,
    HostBreakers,
    backoff_delay,
    retry_after_seconds,
    retry_delay,
)
from service.download.paths import UnsafePathError, part_path, safe_join
from service.download.verify import VerificationError, check_fits, verify_file

__all__ = [
    "BreakerState",
    "CircuitBreaker",
    "DownloadError",
    "FetchError",
    "FetchPermanentError",
    "FetchResult",
    "FetchRetryableError",
    "FetchVerifyError",
    "HostBreakers",
    "UnsafePathError",
    "VerificationError",
    "backoff_delay",
    "check_fits",
    "fetch_file",
    "part_path",
    "retry_after_seconds",
    "retry_delay",
    "safe_join",
    "verify_file",
]
