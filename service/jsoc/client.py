"""Async JSOC client (aiohttp): jsoc_info, checkAddress and jsoc_fetch (docs/jsoc-protocol.md §3).

One ClientSession with one TCPConnector (keep-alive; per-host limit 1 by default) talks to one
JSOC server. The base URL is the server root: CGIs live under `cgi-bin/ajax/`, files under the
root (like drms's `http_download_baseurl`). CGI failures raise the typed errors of `status.py`.
"""

from __future__ import annotations

import json
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, NamedTuple
from urllib.parse import quote_plus

import aiohttp
from yarl import URL

from service.download.limits import retry_after_seconds
from service.jsoc.metadata import SeriesMeta, parse_series_struct
from service.jsoc.records import split_record, split_segment
from service.jsoc.replies import (
    InfoStatusModel,
    RsListModel,
    RsSummaryModel,
    SeriesStructModel,
    checked,
    export_reply,
)
from service.jsoc.status import (
    JsocError,
    JsocHttpError,
    JsocMalformedReply,
    JsocPermanentError,
    JsocTransientError,
    StatusKind,
    classify_status,
    error_for_status,
)
from service.ops import jsoc_state, metrics
from service.safetext import clean_text
from service.version import package_version

__all__ = ["ExportItem", "ExportReply", "JsocClient", "build_items", "member_url", "user_agent"]

CGI_PATH = "cgi-bin/ajax/"
DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=30.0, sock_connect=30.0,
                                        sock_read=120.0)
PENDING_OR_DONE = frozenset({0, 1, 2, 12})
ROUND_TRIP_SAMPLES = 20
PING_FILTER = "^jsoc_bulk_reachability_check$"
SERIES_DBHOST = "hmidb2"  # showextseries' dbhost, as drms sends it
SERIES_CACHE_SECONDS = 3600.0  # a daemon running for months still sees a series change
# server base URL -> series -> (monotonic time fetched, metadata)
_SERIES_CACHE: dict[str, dict[str, tuple[float, SeriesMeta]]] = {}


def clear_series_cache() -> None:
    """Forget every server's cached series metadata (tests reuse loopback ports)."""
    _SERIES_CACHE.clear()


def user_agent() -> str:
    """`jsoc-bulk/<version>`."""
    return f"jsoc-bulk/{package_version()}"


def _series_name(recordset: str) -> str:
    """Leading series name of a record set, lower-cased (the series_struct cache key)."""
    end = len(recordset)
    for mark in "[{":
        pos = recordset.find(mark)
        if pos != -1:
            end = min(end, pos)
    return recordset[:end].strip().lower()


class DataRow(NamedTuple):
    """One `data` row of an export reply / index.json."""

    record: str
    filename: str


class ExportItem(NamedTuple):
    """One downloadable file of a finished export."""

    record: str  # record spec without `{segment}` ("" for a tar file)
    segment: str | None  # segment name when known
    url: str  # a tar member's: member_url(tar URL, its name in the tar)
    filename: str  # local file name suggestion (a single path component)


@dataclass
class ExportReply:
    """A jsoc_fetch reply (exp_request, exp_status or index.json), with numbers normalised."""

    status: int
    request_id: str | None = None
    wait: float = 0.0
    size_mb: int = 0
    rcount: int = 0
    count: int = 0
    method: str = ""
    protocol: str = ""
    dir: str = ""
    data: list[DataRow] = field(default_factory=list)
    tarfile: str | None = None
    error: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def kind(self) -> StatusKind:
        return classify_status(self.status)

    @property
    def is_quick(self) -> bool:
        """An immediate url_quick answer: files are absolute SUMS paths, no request id."""
        return self.status == 0 and not self.dir and not self.request_id

    @classmethod
    def from_json(cls, payload: dict[str, Any], what: str = "jsoc_fetch") -> ExportReply:
        """Parse a reply whose numbers may be JSON strings ("status":"0") or numbers;
        JsocMalformedReply when it does not have a jsoc_fetch reply's shape."""
        model = export_reply(payload, what)
        request_id = model.requestid if model.requestid is not None else model.reqid
        rows = [DataRow(r.record, r.filename) for r in model.data or []]
        count = len(rows) if model.count is None else model.count
        return cls(
            status=model.status,
            request_id=request_id if request_id not in (None, "", "VOID") else None,
            wait=model.wait or 0.0,
            size_mb=int(model.size or 0),
            rcount=count if model.rcount is None else model.rcount,
            count=count,
            method=model.method,
            protocol=model.protocol,
            dir=model.dir,
            data=rows,
            tarfile=model.tarfile or None,
            error=model.error or model.errmsg or None,
            raw=payload,
        )

    @property
    def file_rows(self) -> list[DataRow]:
        """Rows that name a file, in order: the rows ``build_items`` turns into items."""
        return [row for row in self.data if _is_file_row(row)]

    @property
    def missing(self) -> list[DataRow]:
        """Rows that name no file (`NoDataFile`, `warning=…`, empty filename)."""
        return [row for row in self.data if not _is_file_row(row)]


def _is_file_row(row: DataRow) -> bool:
    return bool(row.filename) and row.filename != "NoDataFile" and \
        not row.record.startswith("warning=")


def quick_filename(record: str, segment: str | None, server_path: str) -> str:
    """drms-style local name for a url_quick file: series, prime-key values without `.:-`,
    segment, extension (`hmi.V_45s.20160401_000000_TAI.2.Dopplergram.fits`)."""
    basename = server_path.rsplit("/", 1)[-1]
    series, keys = split_record(record)
    values = [re.sub(r"[.:\-]", "", v).replace("/", "_") for v in keys]
    ext = "." + basename.rsplit(".", 1)[-1] if "." in basename else ""
    tail = segment or (basename[: -len(ext)] if ext else basename)
    return ".".join(p for p in [series, *values, tail] if p) + ext


def _guess_segment(filename: str, segments: list[str] | tuple[str, ...]) -> str | None:
    """The longest segment name that ends the file's stem (`….continuum.fits` -> continuum)."""
    stem = filename.rsplit(".", 1)[0] if "." in filename else filename
    matches = [s for s in segments if stem == s or stem.endswith("." + s)]
    return max(matches, key=len) if matches else None


def member_url(tar_url: str, member: str) -> str:
    """URL of one member of a tar: the tar's URL with the member name as fragment (never sent
    to the server: the member is read from the tar's stream)."""
    return f"{tar_url}#{member}"


def build_items(reply: ExportReply, file_url: Callable[[str], str],
                segments: list[str] | tuple[str, ...] = ()) -> list[ExportItem]:
    """File URLs of a finished export (docs/jsoc-protocol.md §4.1): quick -> absolute SUMS path,
    staged -> dir + "/" + filename. A tar export gives the tar first (record "") and then
    its members, whose URLs are `member_url(tar, filename)`. Rows without a file are skipped."""
    if reply.status != 0:
        raise ValueError(f"export {reply.request_id} is not finished (status {reply.status})")
    tar_url, items = None, []
    if reply.tarfile and reply.method.endswith("-tar"):
        tar_url = file_url(reply.tarfile)
        items.append(ExportItem("", None, tar_url, reply.tarfile.rsplit("/", 1)[-1]))
    for row in reply.file_rows:
        record, segment = split_segment(row.record)
        basename = row.filename.rsplit("/", 1)[-1]
        segment = segment or _guess_segment(basename, segments)
        if tar_url:
            url, name = member_url(tar_url, row.filename), basename
        elif reply.dir:
            url, name = file_url(reply.dir.rstrip("/") + "/" + row.filename), basename
        else:
            url, name = file_url(row.filename), quick_filename(record, segment, row.filename)
        items.append(ExportItem(record, segment, url, name))
    return items


class JsocClient:
    """Talks to one JSOC server. Use as `async with JsocClient(base_url) as jsoc:`."""

    def __init__(
        self,
        base_url: str,
        *,
        per_host_limit: int = 1,
        total_limit: int = 8,
        timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
        keepalive_timeout: float = 30.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"JSOC base URL must start with http:// or https://, got {base_url!r}")
        self.base_url = URL(base_url if base_url.endswith("/") else base_url + "/")
        self._timeout = timeout
        self._own_session = session is None
        self._session = session
        self._limits = (total_limit, per_host_limit, keepalive_timeout)
        # shared by every client of this server in the process (the API validating a job and
        # the worker planning it ask for the same series): {series: metadata}
        self._series_cache = _SERIES_CACHE.setdefault(str(self.base_url), {})
        self._round_trips: deque[float] = deque(maxlen=ROUND_TRIP_SAMPLES)

    @property
    def round_trip(self) -> float | None:
        """The network round trip to JSOC: the quickest recent CGI answer (time to its
        headers), or None before the first."""
        return min(self._round_trips) if self._round_trips else None

    async def __aenter__(self) -> JsocClient:
        self.session  # noqa: B018 - create it inside the running loop
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        """The shared session (also usable by the downloader: same connector and limits)."""
        if self._session is None:
            limit, per_host, keepalive = self._limits
            connector = aiohttp.TCPConnector(limit=limit, limit_per_host=per_host,
                                             keepalive_timeout=keepalive)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout,
                headers={"User-Agent": user_agent()},
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None and self._own_session:
            await self._session.close()
        self._session = None

    def file_url(self, path: str) -> str:
        """Absolute URL of a server path such as `/SUM58/D1/S00008/x.fits`."""
        return str(self.base_url.with_path(self.base_url.path.rstrip("/") + "/" + path.lstrip("/")))

    # -- transport -------------------------------------------------------------------------

    async def _get_json(self, cgi: str, params: dict[str, Any]) -> dict[str, Any]:
        """GET a CGI and parse its JSON body (latin-1, as drms does). Every call is timed and
        tells the process whether JSOC is reachable (service.ops)."""
        started = time.monotonic()
        try:
            payload = await self._fetch_json(cgi, params, started)
        except JsocError as exc:
            kind = exc.metric_kind
            metrics.JSOC_ERRORS.labels(cgi, kind).inc()
            if kind != "http_4xx":
                jsoc_state.record_unreachable(str(self.base_url), str(exc))
            raise
        finally:
            metrics.JSOC_LATENCY.labels(cgi, str(params.get("op", ""))).observe(
                time.monotonic() - started)
        jsoc_state.record_ok(str(self.base_url))
        return payload

    async def _fetch_json(self, cgi: str, params: dict[str, Any],
                          started: float) -> dict[str, Any]:
        url = self.base_url.join(URL(CGI_PATH + cgi)).with_query(
            {k: str(v) for k, v in params.items() if v is not None})
        try:
            async with self.session.get(url) as resp:
                self._round_trips.append(time.monotonic() - started)
                body = await resp.read()
                if resp.status != 200:
                    raise _tagged(JsocHttpError(
                        f"HTTP {resp.status} from {cgi}: {body[:200].decode('latin-1').strip()}",
                        http_status=resp.status, retry_after=retry_after_seconds(resp.headers)),
                        "http_4xx" if resp.status < 500 else f"http_{resp.status}")
        except TimeoutError as exc:
            raise _tagged(JsocTransientError(f"timeout talking to {cgi} at {self.base_url}"),
                          "timeout") from exc
        except aiohttp.ClientError as exc:
            raise _tagged(JsocTransientError(f"connection error talking to {cgi}: {exc}"),
                          "connection") from exc
        try:
            payload = json.loads(body.decode("latin-1"))
        except (ValueError, RecursionError) as exc:
            raise _tagged(JsocMalformedReply(
                f"JSOC sent a malformed {cgi} reply: not JSON, or nested too deeply: "
                f"{body[:80].decode('latin-1')!r}"), "bad_reply") from exc
        if not isinstance(payload, dict):
            raise _tagged(JsocMalformedReply(
                f"JSOC sent a malformed {cgi} reply: JSON that is not an object: {payload!r:.80}"),
                "bad_reply")
        return payload

    async def _jsoc_info(self, params: dict[str, Any]) -> dict[str, Any]:
        payload = await self._get_json("jsoc_info", params)
        status = checked(InfoStatusModel, payload, f"jsoc_info {params.get('op')}").status
        if status != 0:
            error = payload.get("error") or payload.get("errmsg") or "jsoc_info failed"
            metrics.JSOC_ERRORS.labels("jsoc_info", f"status_{status}").inc()
            raise JsocPermanentError(f"{clean_text(str(error))} [status={status}]",
                                     status=status)
        return payload

    # -- jsoc_info / checkAddress -----------------------------------------------------------

    async def series_struct(self, series: str) -> SeriesMeta:
        """Series metadata (cached per server and lower-cased series name, process-wide, for
        SERIES_CACHE_SECONDS)."""
        key = _series_name(series)
        if not key:
            raise ValueError(f"no series name in {series!r}")
        cached = self._series_cache.get(key)
        if cached is None or time.monotonic() - cached[0] > SERIES_CACHE_SECONDS:
            payload = await self._jsoc_info({"op": "series_struct", "ds": key})
            checked(SeriesStructModel, payload, "series_struct")
            name = series.strip()[: len(key)]
            cached = (time.monotonic(), parse_series_struct(payload, name=name))
            self._series_cache[key] = cached
        return cached[1]

    async def rs_summary(self, recordset: str) -> int:
        """Number of records in a record set."""
        payload = await self._jsoc_info({"op": "rs_summary", "ds": recordset})
        return checked(RsSummaryModel, payload, "rs_summary").count

    async def rs_list(self, recordset: str, keys: list[str] | tuple[str, ...] = (),
                      segs: list[str] | tuple[str, ...] = (), n: int | None = None, *,
                      links: list[str] | tuple[str, ...] = (),
                      rec_index: bool = False) -> dict[str, Any]:
        """Keywords / segment paths / links of a record set (the raw reply, status checked)."""
        if not (keys or segs or links):
            raise ValueError("rs_list needs at least one of keys, segs or links")
        params: dict[str, Any] = {"op": "rs_list", "ds": recordset}
        for name, values in (("key", keys), ("seg", segs), ("link", links)):
            if values:
                params[name] = ",".join(values)
        if rec_index:
            params["R"] = 1
        if n is not None:
            params["n"] = n
        payload = await self._jsoc_info(params)
        checked(RsListModel, payload, "rs_list")
        return payload

    async def ping(self) -> None:
        """The cheapest question JSOC answers (show_series of a name that matches nothing):
        raises JsocError when JSOC cannot be reached."""
        await self._get_json("show_series", {"filter": PING_FILTER})

    async def series_list(self) -> list[str]:
        """Every series name JSOC lists: ``showextseries`` (what drms asks JSOC), or plain
        ``show_series`` when the wrapper is missing or fails."""
        try:
            payload = await self._get_json("showextseries", {"dbhost": SERIES_DBHOST})
            listed = payload.get("seriesList")
            if not payload.get("errMsg") and isinstance(listed, list):
                return [next(iter(n)) if isinstance(n, dict) else str(n) for n in listed if n]
        except JsocHttpError:
            pass
        payload = await self._get_json("show_series", {})
        if _as_int(payload.get("status"), 1) != 0:
            raise JsocPermanentError(f"show_series failed: {payload.get('errmsg')}", status=1)
        return [str(n.get("name")) for n in payload.get("names") or [] if isinstance(n, dict)]

    async def check_address(self, email: str) -> int:
        """checkAddress status (2 = registered). The address is double-encoded, as drms does."""
        payload = await self._get_json(
            "checkAddress.sh", {"address": quote_plus(email), "checkonly": 1})
        return _as_int(payload.get("status"), -1)

    # -- jsoc_fetch ------------------------------------------------------------------------

    async def exp_request(self, recordset: str, notify: str, method: str = "url",
                          protocol: str = "fits", filenamefmt: str | None = None,
                          process: str | int | None = None) -> ExportReply:
        """Submit an export. Returns the reply for status 0/1/2; raises for the others
        (status 7 as JsocPendingLimitError with the pending ids).

        `process` is drms's value of `process=n` (e.g. `0` or `0|im_patch,…`). As in drms,
        method `url_quick` becomes `url` when the protocol is not `as-is`.
        """
        if method == "url_quick" and protocol.lower() != "as-is":
            method = "url"
        params: dict[str, Any] = {"op": "exp_request", "format": "json", "ds": recordset,
                                  "notify": notify, "method": method, "protocol": protocol,
                                  "filenamefmt": filenamefmt}
        if process is not None:
            params["process=n"] = process
        payload = await self._get_json("jsoc_fetch", params)
        reply = ExportReply.from_json(payload, "exp_request")
        metrics.EXPORT_REPLIES.labels("exp_request", str(reply.status)).inc()
        return self._checked(reply)

    async def exp_status(self, request_id: str, *, check: bool = True) -> ExportReply:
        """Poll an export. With check=True, statuses other than 0/1/2/12 raise."""
        if not request_id:
            raise ValueError("exp_status needs a request id such as JSOC_20250101_042")
        payload = await self._get_json(
            "jsoc_fetch", {"op": "exp_status", "requestid": request_id, "format": "json"})
        reply = ExportReply.from_json(payload, "exp_status")
        metrics.EXPORT_REPLIES.labels("exp_status", str(reply.status)).inc()
        if reply.request_id is None:
            reply.request_id = request_id
        return self._checked(reply) if check else reply

    def export_items(self, reply: ExportReply,
                     segments: list[str] | tuple[str, ...] = ()) -> list[ExportItem]:
        """Downloadable (record, segment, url, filename) items of a finished export."""
        return build_items(reply, self.file_url, segments)

    @staticmethod
    def _checked(reply: ExportReply) -> ExportReply:
        if reply.status in PENDING_OR_DONE:
            return reply
        raise error_for_status(reply.status, reply.error, request_id=reply.request_id,
                               reply=reply, size_mb=reply.size_mb, count=reply.count)


def _tagged(exc: JsocError, kind: str) -> JsocError:
    """Label an error with its metric kind (timeout, connection, http_<code>, bad_reply)."""
    exc.metric_kind = kind
    return exc


def _as_int(value: Any, default: int) -> int:
    """int() of a JSON string or number; `default` when absent or not a number."""
    if value is None or value == "":
        return default
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return default
