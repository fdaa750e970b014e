"""The HTTP transport of the jsoc-bulk REST API: one JSON request at a time, errors as
:class:`ApiError`. The CLI and the documented Python client (:mod:`jsoc_bulk`) both use it."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

API_PREFIX = "api/v1/"
DEFAULT_TIMEOUT = 30.0


class ApiError(Exception):
    """The API answered with an error; ``detail`` is the problem document's one-line message."""

    def __init__(self, status: int, detail: str, errors: list[dict[str, Any]] | None = None,
                 body: Any = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors or []
        self.body = body  # the decoded JSON body, when there was one


class ApiUnreachable(ApiError):
    """No answer at all (connection refused, timeout, DNS)."""

    def __init__(self, detail: str) -> None:
        super().__init__(0, detail)


def _error_from_response(status: int, reason: str, body: bytes) -> ApiError:
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("detail"), str):
        errors = doc.get("errors") if isinstance(doc.get("errors"), list) else []
        return ApiError(status, doc["detail"], errors)
    text = body.decode("utf-8", "replace").strip().splitlines()
    detail = text[0][:200] if text else reason
    return ApiError(status, f"HTTP {status} {reason}: {detail}", body=doc)


class ApiClient:
    """Talks JSON to ``<base_url>/api/v1``; every failure becomes an :class:`ApiError`."""

    def __init__(self, base_url: str, token: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.token = token
        self.timeout = timeout
        # The daemon is local or on a known host: never route through an environment proxy.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def url(self, path: str, params: dict[str, Any] | None = None) -> str:
        url = urllib.parse.urljoin(self.base_url, API_PREFIX + path.lstrip("/"))
        query = {k: _query_value(v) for k, v in (params or {}).items() if v is not None}
        return f"{url}?{urllib.parse.urlencode(query)}" if query else url

    def request(self, method: str, path: str, body: Any = None,
                params: dict[str, Any] | None = None,
                headers: dict[str, str] | None = None) -> Any:
        """Send one request; return the decoded JSON body (None when empty)."""
        all_headers = {"Accept": "application/json", **(headers or {})}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            all_headers["Content-Type"] = "application/json"
        if self.token:
            all_headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.url(path, params), data=data, method=method,
                                     headers=all_headers)
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise _error_from_response(exc.code, exc.reason, exc.read()) from None
        except (TimeoutError, urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiUnreachable(
                f"cannot reach the jsoc-bulk API at {self.base_url} ({reason}); "
                "is 'jsoc-bulk serve' running? (set --api-url or JSOC_BULK_API_URL)"
            ) from None
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiError(0, f"the API at {self.base_url} did not answer with JSON") from None

    def request_object(self, method: str, path: str, body: Any = None,
                       params: dict[str, Any] | None = None,
                       headers: dict[str, str] | None = None) -> dict[str, Any]:
        """`request` for an endpoint that answers with a JSON object (ApiError otherwise)."""
        doc = self.request(method, path, body=body, params=params, headers=headers)
        if not isinstance(doc, dict):
            raise ApiError(0, f"the API at {self.base_url} answered {method} {path} with "
                              f"{type(doc).__name__}, not a JSON object", body=doc)
        return doc

    # -- endpoints ---------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self.request_object("GET", "health")

    def ready(self) -> dict[str, Any]:
        """GET /ready; its body also when it answers 503 (not ready)."""
        try:
            return self.request_object("GET", "ready")
        except ApiError as exc:
            if exc.status == 503 and isinstance(exc.body, dict) and "status" in exc.body:
                return exc.body
            raise

    def submit(self, body: dict[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self.request_object("POST", "jobs", body=body, headers=headers)

    def preview(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /jobs/preview: what the spec selects (records, bytes, exports)."""
        return self.request_object("POST", "jobs/preview", body=body)

    def list_jobs(self, state: str | None = None, limit: int | None = None,
                  offset: int | None = None) -> dict[str, Any]:
        return self.request_object("GET", "jobs", params={"state": state, "limit": limit,
                                                          "offset": offset})

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self.request_object("GET", f"jobs/{_quote(job_id)}")

    def list_files(self, job_id: str, state: str | None = None, limit: int | None = None,
                   offset: int | None = None, after_id: int | None = None) -> dict[str, Any]:
        return self.request_object("GET", f"jobs/{_quote(job_id)}/files",
                                   params={"state": state, "limit": limit, "offset": offset,
                                           "after_id": after_id})

    def action(self, job_id: str, action: str, body: dict[str, Any] | None = None,
               ) -> dict[str, Any]:
        """POST /jobs/{id}/{action}: cancel, pause, resume or retry (``body``: retry's
        ``{"files": [ids]}``)."""
        return self.request_object("POST", f"jobs/{_quote(job_id)}/{action}", body=body)

    def delete_job(self, job_id: str, delete_files: bool = False) -> Any:
        return self.request("DELETE", f"jobs/{_quote(job_id)}",
                            params={"delete_files": delete_files or None})

    def workers(self) -> dict[str, Any]:
        return self.request_object("GET", "workers")


def _quote(part: str) -> str:
    return urllib.parse.quote(str(part), safe="")


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
