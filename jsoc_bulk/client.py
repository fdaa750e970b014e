"""The synchronous Python client: :class:`Client` submits jobs, :class:`Job` follows one.

    >>> from jsoc_bulk import Client
    >>> client = Client("http://127.0.0.1:8470/")
    >>> job = client.submit("hmi.M_720s[2014.01.01_00:00:00_TAI/1h]{magnetogram}")
    >>> files = job.wait()            # absolute paths; files.errors lists failures
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from jsoc_bulk.results import PAGE_SIZE, TERMINAL_STATES, FileEntry, Results, results_from
from jsoc_bulk.specs import to_spec
from service.apiclient import ApiClient

DEFAULT_URL = "http://127.0.0.1:8470/"


class Client:
    """A jsoc-bulk daemon's REST API (``url`` like ``http://127.0.0.1:8470/``; ``token`` when
    the daemon requires one). Errors are :class:`jsoc_bulk.ApiError` with the API's message."""

    def __init__(self, url: str = DEFAULT_URL, token: str | None = None,
                 timeout: float = 30.0) -> None:
        self.api = ApiClient(url, token=token, timeout=timeout)

    @classmethod
    def over(cls, api: ApiClient) -> Client:
        """A client on an existing transport (the CLI's)."""
        client = cls.__new__(cls)
        client.api = api
        return client

    def submit(self, what: Any, *, idempotency_key: str | None = None, **fields: Any) -> Job:
        """Submit a job from a spec dict, a DRMS record-set string or a sunpy
        ``JSOCClient.search`` / ``Fido.search`` result (JSOC rows); ``fields`` override the
        spec's (e.g. ``path_template="{series}/{T_REC:%Y/%m/%d}/{filename}"``)."""
        job = self.api.submit(to_spec(what, **fields), idempotency_key=idempotency_key)
        return Job(self, job["id"], job)

    def job(self, job_id: str) -> Job:
        """A job submitted earlier (its status is fetched now: unknown ids raise ApiError)."""
        return Job(self, job_id, self.api.get_job(job_id))

    def jobs(self, state: str | None = None, limit: int = 50) -> list[Job]:
        """The newest jobs, optionally in one state."""
        page = self.api.list_jobs(state=state, limit=limit)
        return [Job(self, item["id"], item) for item in page["items"]]

    def health(self) -> dict[str, Any]:
        return self.api.health()


class Job:
    """One job of a daemon. ``info`` is the last status fetched."""

    def __init__(self, client: Client, job_id: str, info: dict[str, Any] | None = None) -> None:
        self.client = client
        self.id = job_id
        self.info = info or {}

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.info.get('state', '?')}>"

    @property
    def state(self) -> str:
        return str(self.info.get("state", ""))

    def status(self) -> dict[str, Any]:
        """The job's state and progress now (counts, bytes, rate, ETA, exports, errors)."""
        self.info = self.client.api.get_job(self.id)
        return self.info

    def files(self, state: str | None = None) -> Iterator[FileEntry]:
        """Every file of the job (or those in ``state``: pending, downloading, done, failed,
        skipped), fetched a page at a time."""
        after = 0
        while True:
            page = self.client.api.list_files(self.id, state=state, limit=PAGE_SIZE,
                                              after_id=after)
            yield from (FileEntry.from_api(item) for item in page["items"])
            if page.get("next_offset") is None or not page["items"]:
                return
            after = page["items"][-1]["id"]

    def wait(self, timeout: float | None = None, progress: bool = True,
             interval: float = 1.0) -> Results:
        """Wait until the job ends and return the absolute paths of its files; failed files
        are listed in ``.errors`` (not raised). ``progress`` shows bars (plain lines when not
        on a terminal). TimeoutError after ``timeout`` seconds (the job goes on)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        sleep = _sleeper(deadline, self.id)
        if progress:
            from service.cli_progress import follow_job

            self.info = follow_job(self.status, interval=interval, sleep=sleep,
                                   out=sys.stderr)
        else:
            while self.status().get("state") not in TERMINAL_STATES:
                sleep(interval)
        return results_from(list(self.files()), self.info)

    def pause(self) -> dict[str, Any]:
        return self._action("pause")

    def resume(self) -> dict[str, Any]:
        return self._action("resume")

    def cancel(self) -> dict[str, Any]:
        return self._action("cancel")

    def retry(self, files: list[int] | None = None) -> dict[str, Any]:
        """Retry failed files and chunks; with ``files`` (ids, e.g. from a verify), fetch
        those again if the daemon finds them missing or different from what it recorded."""
        return self._action("retry", {"files": files} if files else None)

    def _action(self, name: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        self.info = self.client.api.action(self.id, name, body)
        return self.info


def _sleeper(deadline: float | None, job_id: str) -> Callable[[float], None]:
    def sleep(seconds: float) -> None:
        if deadline is not None and time.monotonic() + seconds > deadline:
            raise TimeoutError(f"job {job_id} did not end in time; it goes on (call wait "
                               "again, or cancel it)")
        time.sleep(seconds)
    return sleep
