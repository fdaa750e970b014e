"""Python client of a jsoc-bulk daemon: submit a spec, a DRMS record-set string or a sunpy
search result, follow the job, get the paths of its files.

    from jsoc_bulk import Client
    job = Client("http://127.0.0.1:8470/").submit(Fido.search(...))
    files = job.wait()          # absolute paths; files.errors lists what failed

``AsyncClient`` / ``AsyncJob`` are the asyncio flavour with the same methods.
"""

from __future__ import annotations

from jsoc_bulk.aio import AsyncClient, AsyncJob
from jsoc_bulk.client import Client, Job
from jsoc_bulk.results import FileEntry, FileError, Results
from jsoc_bulk.specs import SpecError, to_spec
from service.apiclient import ApiError, ApiUnreachable

__all__ = ["ApiError", "ApiUnreachable", "AsyncClient", "AsyncJob", "Client", "FileEntry",
           "FileError", "Job", "Results", "SpecError", "to_spec"]
