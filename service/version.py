"""The installed version of jsoc-bulk: what ``--version``, the API and the User-Agent show."""

from __future__ import annotations

from importlib import metadata


def package_version() -> str:
    """The installed distribution's version; ``0`` when run from a tree that is not installed."""
    try:
        return metadata.version("jsoc-bulk")
    except metadata.PackageNotFoundError:
        return "0"
