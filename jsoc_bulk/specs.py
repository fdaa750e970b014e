"""Job specs from what sunpy and drms users already have: a spec dict, a DRMS record-set string,
or the result of sunpy's ``JSOCClient.search`` / ``Fido.search`` (JSOC rows).

A sunpy result is turned into the spec of the query that produced it (its ``query_args``:
series, time range, wavelength, segments, prime keys, keywords, sample, notify), as sunpy's own
``fetch`` does: the job downloads what that query selects. Times are sent as sunpy sends them
to JSOC (TAI, whole seconds). sunpy is not imported: any object with ``query_args`` works.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

TAI_FORMAT = "%Y.%m.%d_%H:%M:%S_TAI"
SUNPY_OPS = {"==": "="}


class SpecError(ValueError):
    """What was given cannot be made into a job spec; the message says what is accepted."""


def to_spec(what: Any, **fields: Any) -> dict[str, Any]:
    """A job spec (dict) from a spec dict, a DRMS record-set string or a sunpy search result;
    ``fields`` are set on top (e.g. ``path_template=…``, ``priority=…``)."""
    if isinstance(what, Mapping):
        spec = dict(what)
    elif isinstance(what, str):
        if not what.strip():
            raise SpecError("the record set is empty; give e.g. 'hmi.M_720s[2014.01.01_TAI/1h]'")
        spec = {"recordset": what.strip()}
    else:
        spec = _from_search(what)
    spec.update(fields)
    return spec


def _jsoc_queries(result: Any) -> list[Mapping[str, Any]]:
    """The JSOC query arguments of a JSOCResponse or of the JSOC tables of a UnifiedResponse."""
    if hasattr(result, "query_args"):
        return list(result.query_args or [])
    if isinstance(result, str | bytes) or not hasattr(result, "__iter__"):
        return []
    queries: list[Mapping[str, Any]] = []
    for table in result:
        queries += list(getattr(table, "query_args", None) or [])
    return queries


def _from_search(result: Any) -> dict[str, Any]:
    queries = _jsoc_queries(result)
    if not queries:
        raise SpecError(
            f"cannot submit a {type(result).__name__}: give a job spec dict, a DRMS record-set "
            "string like 'hmi.M_720s[2014.01.01_TAI/1h]', or the result of sunpy's "
            "JSOCClient.search / Fido.search with JSOC rows (a.jsoc.Series(...))")
    if len(queries) > 1:
        raise SpecError(f"the search result holds {len(queries)} JSOC queries; submit them one "
                        "at a time (one job per query), e.g. for each JSOC table of a Fido "
                        "result: client.submit(table)")
    return query_to_spec(queries[0])


def query_to_spec(query: Mapping[str, Any]) -> dict[str, Any]:
    """One sunpy JSOC query (``JSOCResponse.query_args[i]``) as a job spec."""
    if not query.get("series"):
        raise SpecError("the sunpy query has no series (add a.jsoc.Series(...))")
    if not query.get("start_time") or not query.get("end_time"):
        raise SpecError("the sunpy query has no time range (add a.Time(start, end))")
    spec: dict[str, Any] = {"series": str(query["series"]),
                            "start": _tai(query["start_time"]), "end": _tai(query["end_time"])}
    if query.get("wavelength") is not None:
        spec["wavelengths"] = _wavelengths(query["wavelength"])
    if query.get("segment"):
        segment = query["segment"]
        names = segment if isinstance(segment, list | tuple) else str(segment).split(",")
        spec["segments"] = [str(n).strip() for n in names if str(n).strip()]
    if query.get("primekey"):
        spec["prime_keys"] = {str(k): _plain(v) for k, v in query["primekey"].items()}
    if query.get("keyword"):
        spec["where"] = [{"keyword": str(k), "op": SUNPY_OPS.get(c["operator"], c["operator"]),
                          "value": _plain(c["value"])} for k, c in query["keyword"].items()]
    if query.get("sample"):
        spec["cadence"] = f"{float(query['sample']):g}s"
    if query.get("notify"):
        spec["notify"] = str(query["notify"])
    if query.get("protocol") in ("fits", "as-is"):
        spec["protocol"] = query["protocol"]
    return spec


def _tai(time: Any) -> str:
    """An astropy Time as sunpy writes it to JSOC (TAI, whole seconds); text as it is."""
    tai = getattr(time, "tai", None)
    if tai is not None and hasattr(tai, "strftime"):
        return str(tai.strftime(TAI_FORMAT))
    return str(time)


def _wavelengths(value: Any) -> list[int | float]:
    """An astropy Quantity (or several) in Ångström, as JSOC's WAVELNTH numbers."""
    to = getattr(value, "to_value", None)
    numbers = to("Angstrom") if to is not None else value
    items = list(numbers) if hasattr(numbers, "__iter__") else [numbers]
    return [_plain(float(n)) for n in items]


def _plain(value: Any) -> Any:
    """numpy scalars and whole floats as plain JSON numbers; the rest as text or as it is."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, int | float | str) else str(value)
