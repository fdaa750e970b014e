"""Info CGIs: show_series, showextseries, jsoc_info (series_struct, rs_summary, rs_list) and
checkAddress.sh, with the response shapes of docs/jsoc-protocol.md §3.1-§3.7."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any
from urllib.parse import unquote_plus

from aiohttp import web

from jsocsim.query import QueryError, parse_recordset
from jsocsim.state import SimState, get_state

EMAIL_RE = re.compile(r"\s*[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,6}")


async def request_params(request: web.Request) -> dict[str, str]:
    """Query-string parameters merged with POSTed form fields (form wins)."""
    params = dict(request.query)
    if request.method == "POST":
        params.update({k: str(v) for k, v in (await request.post()).items()})
    return params


def json_reply(body: dict[str, Any]) -> web.Response:
    """HTTP 200 with a JSON body (the CGIs report errors inside the JSON)."""
    return web.json_response(body)


def compile_filter(pattern: str | None) -> tuple[re.Pattern[str] | None, bool]:
    """(regex, inverted) for a show_series filter; a leading 'NOT ' inverts it."""
    if not pattern:
        return None, False
    inverted = pattern.startswith("NOT ")
    if inverted:
        pattern = pattern[4:]
    return re.compile(pattern, re.IGNORECASE), inverted


def filtered_series(state: SimState, pattern: str | None) -> list[Any]:
    """Catalog series whose name matches the filter, sorted case-sensitively by name."""
    regex, inverted = compile_filter(pattern)
    series = state.catalog.all()
    if regex is None:
        return series
    return [s for s in series if bool(regex.search(s.name)) != inverted]


async def handle_show_series(request: web.Request) -> web.Response:
    """show_series?filter=RE → {"status":0,"names":[{name, primekeys, note}],"n":N}."""
    params = await request_params(request)
    try:
        series = filtered_series(get_state(request), params.get("filter"))
    except re.error as exc:
        return json_reply({"status": 1, "errmsg": f"Bad filter regular expression: {exc}"})
    names = [{"name": s.name, "primekeys": ", ".join(k.name for k in s.primekeys),
              "note": s.note} for s in series]
    return json_reply({"status": 0, "names": names, "n": len(names)})


async def handle_showextseries(request: web.Request) -> web.Response:
    """showextseries?dbhost=H[&filter=RE][&info=1] → {"errMsg":"","seriesList":[…]}."""
    params = await request_params(request)
    if not params.get("dbhost"):
        return json_reply({"errMsg": "Missing required argument 'dbhost'.", "seriesList": []})
    try:
        series = filtered_series(get_state(request), params.get("filter"))
    except re.error as exc:
        return json_reply({"errMsg": f"Bad filter regular expression: {exc}", "seriesList": []})
    if params.get("info") == "1":
        listed: list[Any] = [{s.name: {"description": s.note}} for s in series]
    else:
        listed = [s.name for s in series]
    return json_reply({"errMsg": "", "seriesList": listed})


async def handle_jsoc_info(request: web.Request) -> web.Response:
    """jsoc_info?op=series_struct|rs_summary|rs_list&ds=…; errors are {"status":1,"error":…}."""
    started = time.perf_counter()
    params = await request_params(request)
    op = params.get("op", "")
    ops = {"series_struct": series_struct, "rs_summary": rs_summary, "rs_list": rs_list}
    if op not in ops:
        return json_reply({"status": 1, "error": f"jsoc_info: unsupported op '{op}'; accepted: "
                           + ", ".join(sorted(ops))})
    if not params.get("ds"):
        return json_reply({"status": 1, "error": "jsoc_info: 'ds' (a series or record set) "
                                                 "must be given"})
    try:
        # Large rs_list replies take a noticeable time: keep the event loop serving files meanwhile.
        body = await asyncio.to_thread(ops[op], get_state(request), params)
    except (InfoError, QueryError) as exc:
        return json_reply({"status": 1, "error": str(exc)})
    body["runtime"] = round(time.perf_counter() - started, 3)
    body["status"] = 0
    return json_reply(body)


def check_address(state: SimState, address: str | None, checkonly: bool) -> dict[str, Any]:
    """checkAddress.sh logic (docs/jsoc-protocol.md §3.7) for an already-decoded address."""
    if not address or not EMAIL_RE.match(address):
        return {"status": -2, "msg": "Not a valid email address.", "user_id": -1}
    wanted = address.strip().lower()
    registered = [e.lower() for e in state.config.emails]
    if wanted in registered:
        return {"status": 2, "msg": "Email address is valid and registered.",
                "user_id": registered.index(wanted) + 1}
    if wanted in (e.lower() for e in state.config.pending_emails):
        return {"status": 3, "msg": "Email-address registration is pending. Please wait and try "
                                    "again later.", "user_id": -1}
    if checkonly:
        return {"status": 4, "msg": "email address has been neither validated nor registered",
                "user_id": -1}
    state.config.pending_emails.append(address.strip())
    return {"status": 1, "msg": "Registration started: reply to the confirmation email within "
                                "15 minutes.", "user_id": -1}


async def handle_check_address(request: web.Request) -> web.Response:
    """checkAddress.sh?address=…&checkonly=1; the address is unquoted once more (drms
    double-encodes it)."""
    params = await request_params(request)
    raw = params.get("address")
    address = unquote_plus(raw) if raw is not None else None
    checkonly = params.get("checkonly", "0") not in ("", "0")
    return json_reply(check_address(get_state(request), address, checkonly))


# ---- jsoc_info ops ---------------------------------------------------------------------------
MAX_LISTED_RECORDS = 250_000  # rs_list refuses larger sets, as JSOC does when memory runs out
PSEUDO_NUMBERS = ("*recnum*", "*sunum*")
_SERIES_NAME_RE = re.compile(r"\s*([^\[{,\s]+)")


class InfoError(Exception):
    """A jsoc_info failure; the message becomes the "error" field."""


def leading_series(state: SimState, ds: str) -> Any:
    """The catalog Series named at the start of `ds`."""
    m = _SERIES_NAME_RE.match(ds)
    name = m[1] if m else ds
    try:
        return state.catalog.get(name)
    except KeyError:
        raise InfoError(f"jsoc_info: series '{name}' does not exist") from None


def parse_n(params: dict[str, str]) -> int:
    """The `n` parameter as an int (0 when absent)."""
    raw = params.get("n", "").strip() or "0"
    try:
        return int(raw)
    except ValueError:
        raise InfoError(f"jsoc_info: n must be an integer, got '{raw}'") from None


def record_name(record: Any) -> str:
    """Record spec such as hmi.V_45s[2013.07.03_08:42:00_TAI][2]."""
    return str(record.name())


def interval(state: SimState, series: Any) -> dict[str, Any]:
    """series_struct "Interval": first/last record and recnums ("NA" for an empty series)."""
    first, last = state.engine.first_last(series.name)
    if first is None or last is None:
        return {"FirstRecord": "NA", "FirstRecnum": "NA", "LastRecord": "NA",
                "LastRecnum": "NA", "MaxRecnum": 0}
    return {"FirstRecord": record_name(first), "FirstRecnum": first.recnum,
            "LastRecord": record_name(last), "LastRecnum": last.recnum,
            "MaxRecnum": last.recnum}


def primekey_info(series: Any) -> list[dict[str, Any]]:
    """primekeysinfo: slotted keys carry their step (the <KEY>_step keyword value)."""
    out: list[dict[str, Any]] = []
    for key in series.primekeys:
        if key.slotted:
            step_kw = series.keyword(f"{key.name}_step")
            step = step_kw.defval if step_kw is not None and step_kw.defval else f"{key.step:g}"
            out.append({"name": key.name, "slotted": 1, "step": step})
        else:
            out.append({"name": key.name, "slotted": 0})
    return out


def series_struct(state: SimState, params: dict[str, str]) -> dict[str, Any]:
    """op=series_struct (docs/jsoc-protocol.md §3.4)."""
    series = leading_series(state, params["ds"])
    primekeys: list[str | None] = [k.name for k in series.primekeys] or [None]
    return {
        "note": series.note, "retention": series.retention,
        "stagingretention": series.stagingretention, "unitsize": series.unitsize,
        "archive": series.archive, "tapegroup": series.tapegroup,
        "primekeys": primekeys, "primekeysinfo": primekey_info(series), "dbindex": primekeys,
        "keywords": [{"name": k.name, "type": k.type, "recscope": k.recscope,
                      "defval": k.defval, "units": k.units, "note": k.note}
                     for k in series.keywords],
        "segments": [{"name": s.name, "type": s.type, "units": s.units,
                      "protocol": s.protocol, "dims": s.dims, "note": s.note}
                     for s in series.segments],
        "links": [{"name": lk.name, "target": lk.target, "kind": lk.kind, "note": lk.note}
                  for lk in series.links],
        "Interval": interval(state, series),
    }


def rs_summary(state: SimState, params: dict[str, str]) -> dict[str, Any]:
    """op=rs_summary (docs/jsoc-protocol.md §3.5): the count, segment filters ignored, capped
    at |n|."""
    ds = re.sub(r"\{[^}]*\}", "", params["ds"])
    count = state.engine.count(parse_recordset(ds, state.catalog))
    n = abs(parse_n(params))
    return {"count": min(count, n) if n else count}


def names_list(raw: str | None, everything: list[str]) -> list[str]:
    """Comma-joined names; **ALL** expands to `everything`, **NONE** to nothing."""
    out: list[str] = []
    for name in (p.strip() for p in (raw or "").split(",")):
        if name == "**ALL**":
            out.extend(everything)
        elif name and name != "**NONE**":
            out.append(name)
    return out


def select_records(state: SimState, subsets: list[Any], n: int) -> list[Any]:
    """Records of the set: first n (n > 0), last |n| (n < 0) or all (n = 0, bounded)."""
    engine = state.engine
    if n > 0:
        return list(engine.iter_records(subsets, limit=n))
    if n < 0:
        return list(engine.iter_records(subsets, limit=-n, last=True))
    count = engine.count(subsets)
    if count > MAX_LISTED_RECORDS:
        raise InfoError(f"jsoc_info: Can not open RecordSet, {count} is too many records in one "
                        f"request (limit {MAX_LISTED_RECORDS}); narrow the range or pass n")
    return list(engine.iter_records(subsets))


def keyword_column(records: list[Any], name: str) -> list[Any]:
    """rs_list values of one keyword: strings, numbers for *recnum*/*sunum*."""
    if name.lower() in PSEUDO_NUMBERS:
        return [int(r.keyword(name)) for r in records]
    return [str(r.keyword(name)) for r in records]


def segment_column(series: Any, records: list[Any], name: str) -> dict[str, Any]:
    """rs_list entry of one segment: paths (or sentinels), dims, cparms, bzeros, bscales."""
    segment = series.segment(name)
    n = len(records)
    if segment is None:
        return {"name": name, "values": ["InvalidSegName"] * n, "dims": ["NA"] * n,
                "cparms": [""] * n, "bzeros": ["NA"] * n, "bscales": ["NA"] * n}
    return {"name": segment.name, "values": [r.segment_path(segment.name) for r in records],
            "dims": [segment.dims] * n, "cparms": [segment.cparms] * n,
            "bzeros": [segment.bzero] * n, "bscales": [segment.bscale] * n}


def rs_list(state: SimState, params: dict[str, str]) -> dict[str, Any]:
    """op=rs_list (docs/jsoc-protocol.md §3.6)."""
    if not any(params.get(p) for p in ("key", "seg", "link")):
        raise InfoError("jsoc_info: rs_list needs at least one of key, seg or link")
    subsets = parse_recordset(params["ds"], state.catalog)
    series = subsets[0].series
    wants_all = "**ALL**" in ",".join(params.get(p, "") for p in ("key", "seg", "link"))
    if wants_all and len({s.series.name for s in subsets}) > 1:
        raise InfoError("jsoc_info: **ALL** needs a record set from a single series")
    records = select_records(state, subsets, parse_n(params))
    if not records:
        return {"count": 0}
    keys = names_list(params.get("key"), [k.name for k in series.keywords])
    segs = names_list(params.get("seg"), [s.name for s in series.segments])
    links = names_list(params.get("link"), [lk.name for lk in series.links])
    body: dict[str, Any] = {}
    if params.get("R") == "1":
        body["recinfo"] = [{"name": record_name(r), "online": int(r.online)} for r in records]
    body["keywords"] = [{"name": k, "values": keyword_column(records, k)} for k in keys]
    body["segments"] = [segment_column(series, records, s) for s in segs]
    body["links"] = [{"name": lk, "values": [r.link(lk) for r in records]} for lk in links]
    body["count"] = len(records)
    return body
