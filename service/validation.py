"""Validate a JobSpec against the series' metadata before the job is accepted.

Every problem is collected and reported together (``SpecError.problems``), with the valid choices
listed the way sunpy does, e.g. "Unexpected Segments were passed. The series hmi.M_720s contains
the following Segments ['magnetogram']".
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from service.jobspec import (
    BUILTIN_TEMPLATE_FIELDS,
    JobSpec,
    SpecError,
    format_value,
    template_fields,
)
from service.jsoc.metadata import SeriesMeta
from service.timeutil import parse_time

WAVELENGTH_KEY = "WAVELNTH"
EARLIEST_TIME = "1600.01.01_00:00:00_TAI"  # before the first telescopic solar observations
EARLIEST_TAI = parse_time(EARLIEST_TIME)
_RECORDSET_RE = re.compile(r"([A-Za-z0-9_]+\.[A-Za-z0-9_]+)\s*((?:\[[^\[\]{}]*\]\s*)*)"
                           r"(\{[^{}\[\]]*\})?")
_BRACKETS = re.compile(r"\[\s*([^\[\]]*)\]")


def format_errors(exc: ValidationError) -> list[str]:
    """pydantic errors -> messages saying what was wrong and what is accepted."""
    accepted = ", ".join(JobSpec.model_fields)
    messages = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(part) for part in err["loc"])
        kind, msg = err["type"], err["msg"]
        if kind == "value_error":
            text = str(err.get("ctx", {}).get("error", msg.removeprefix("Value error, ")))
            named = not where or text.startswith(where.split(".")[0])
            messages.append(text if named else f"{where}: {text}")
        elif kind == "extra_forbidden":
            messages.append(f"unknown field {where!r}; accepted fields: {accepted}")
        elif kind == "missing":
            messages.append(f"{where} is required")
        else:
            messages.append(f"{where}: {msg}; got {err.get('input')!r}")
    return messages


def parse_job_spec(data: Mapping[str, Any] | str | bytes) -> JobSpec:
    """A JSON document or mapping -> JobSpec; raises SpecError with clear messages."""
    if isinstance(data, str | bytes):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise SpecError([f"the job spec is not valid JSON: {exc}"]) from None
    if not isinstance(data, Mapping):
        raise SpecError([f"the job spec must be a JSON object; got {type(data).__name__}"])
    try:
        return JobSpec.model_validate(dict(data))
    except ValidationError as exc:
        raise SpecError(format_errors(exc)) from None


def close_matches(name: str, choices: Iterable[str], n: int = 5) -> list[str]:
    """Choices that look like ``name`` (case-insensitive), best first."""
    by_lower = {c.lower(): c for c in choices}
    return [by_lower[m] for m in difflib.get_close_matches(name.lower(), list(by_lower), n, 0.6)]


def check_series_exists(name: str, series_names: Iterable[str]) -> str:
    """Return the series' own spelling, or raise SpecError naming close matches."""
    names = list(series_names)
    for candidate in names:
        if candidate.lower() == name.lower():
            return candidate
    similar = close_matches(name, names)
    hint = f"; did you mean {', '.join(similar)}?" if similar else "; no similar series is known"
    raise SpecError([f"series {name!r} does not exist at JSOC{hint}"])


def _unknown(names: Iterable[str], valid: Iterable[str]) -> list[str]:
    folded = {v.upper() for v in valid}
    return [n for n in names if n.upper() not in folded]


def _prime_key_problems(spec: JobSpec, meta: SeriesMeta) -> list[str]:
    problems = []
    unknown = _unknown(spec.prime_keys, meta.primekey_names)
    if unknown:
        problems.append(
            f"Unexpected PrimeKeys were passed: {unknown}. The series {meta.name} supports the "
            f"following PrimeKeys: {meta.primekey_names}")
    given = {k.upper() for k in spec.prime_keys}
    time_key = meta.time_key()
    if time_key is not None and time_key.name.upper() in given:
        problems.append(f"prime key {time_key.name} is set by start and end; do not also give it "
                        "in prime_keys")
    if spec.wavelengths:
        if WAVELENGTH_KEY not in {p.upper() for p in meta.primekey_names}:
            problems.append(
                f"The series {meta.name} does not support wavelengths: {WAVELENGTH_KEY} is not one "
                f"of its PrimeKeys {meta.primekey_names}")
        elif WAVELENGTH_KEY in given:
            problems.append(f"give the wavelength either as wavelengths or as prime_keys."
                            f"{WAVELENGTH_KEY}, not both")
    return problems


def wavelength_problems(wanted: Iterable[float], series: str,
                        available: list[float]) -> list[str]:
    """Wavelengths asked for that the series does not have (``available``: its values; an
    empty list means unknown, and nothing is refused)."""
    if not available:
        return []
    missing = [w for w in wanted if w not in available]
    if not missing:
        return []
    shown = ", ".join(format_value(w) for w in missing)
    return [f"{WAVELENGTH_KEY} {shown} is not a wavelength of {series}; it has "
            f"{', '.join(format_value(w) for w in available)}"]


def _time_problems(spec: JobSpec, meta: SeriesMeta) -> list[str]:
    time_key = meta.time_key()
    if time_key is None:
        return [f"The series {meta.name} has no time prime key (its PrimeKeys are "
                f"{meta.primekey_names}), so start/end cannot select records; use a recordset job"]
    if spec.cadence is not None and not (time_key.slotted and time_key.step):
        return [f"cadence needs a slotted time key, but {time_key.name} of {meta.name} has no "
                "slots; leave cadence out"]
    return _range_problems(spec, meta, time_key.step or 0.0)


def _range_problems(spec: JobSpec, meta: SeriesMeta, step: float) -> list[str]:
    """start never before EARLIEST_TIME, whatever JSOC says. A range that lies wholly before
    the series' data is refused at submit by its record count (``api.vetting.refuse_empty``:
    "0 records", naming the data's range), where a preview answers it; one that overlaps the
    data's start is accepted, as sunpy and drms accept it."""
    start = spec.start_tai
    if start is not None and start < EARLIEST_TAI:
        return [f"start {spec.start} is before {EARLIEST_TIME}: no series has data that old; "
                f"give a start within the series' data"]
    return []


def recordset_problems(recordset: str, meta: SeriesMeta) -> list[str]:
    """Record-set syntax JSOC would refuse (DRMS: series, then up to one [filter] per prime
    key and [? sql ?] / [! sql !] conditions, then an optional {segment list})."""
    match = _RECORDSET_RE.fullmatch(recordset.strip())
    accepted = ("accepted: SERIES[filter]...{segments}, e.g. "
                "hmi.M_720s[2014.01.01_TAI/1d][? QUALITY = 0 ?]{magnetogram}")
    if match is None:
        return [f"recordset {recordset[:200]!r} is not a record set JSOC accepts (unbalanced "
                f"or misplaced brackets, or text after the segment list); {accepted}"]
    groups = [g for g in _BRACKETS.findall(match[2]) if not g.startswith(("?", "!"))]
    if len(groups) > len(meta.primekeys):
        return [f"recordset {recordset[:200]!r} has {len(groups)} prime-key filters, but "
                f"{meta.name} has {len(meta.primekeys)} prime key(s) {meta.primekey_names}; "
                f"{accepted}"]
    return []


def _segment_and_keyword_problems(spec: JobSpec, meta: SeriesMeta) -> list[str]:
    problems = []
    unknown = _unknown(spec.segments or [], meta.segment_names)
    if unknown:
        problems.append(
            f"Unexpected Segments were passed: {unknown}. The series {meta.name} contains the "
            f"following Segments {meta.segment_names}")
    keywords = meta.keyword_names + meta.primekey_names
    for clause in spec.where:
        if _unknown([clause.keyword], keywords):
            similar = close_matches(clause.keyword, keywords)
            hint = f" Did you mean {similar}?" if similar else ""
            problems.append(
                f"Keyword: {clause.keyword!r} is not supported by series: {meta.name}.{hint} "
                f"Its keywords are {meta.keyword_names}")
    return problems


def _time_field_names(meta: SeriesMeta) -> set[str]:
    names = {p.name.upper() for p in meta.primekeys if p.is_time}
    return names | {k.name.upper() for k in meta.keywords if k.type.lower() == "time"}


def template_problems(template: str, meta: SeriesMeta) -> list[str]:
    """Unknown fields, and strftime formats on fields that are not times."""
    allowed = [*BUILTIN_TEMPLATE_FIELDS, *meta.primekey_names, *meta.keyword_names]
    time_fields = _time_field_names(meta)
    problems = []
    for name, spec in template_fields(template):
        if _unknown([name], allowed):
            similar = close_matches(name, allowed)
            hint = f" Did you mean {similar}?" if similar else ""
            problems.append(
                f"path_template field {{{name}}} is unknown for series {meta.name}.{hint} Allowed: "
                f"{', '.join(BUILTIN_TEMPLATE_FIELDS)} and the series' PrimeKeys "
                f"{meta.primekey_names} and keywords")
        elif "%" in spec and name.upper() not in time_fields:
            problems.append(f"path_template field {{{name}:{spec}}} uses a strftime format, but "
                            f"{name} is not a time; time fields: {sorted(time_fields)}")
    return problems


def check_against_series(spec: JobSpec, meta: SeriesMeta) -> None:
    """Raise SpecError listing every way ``spec`` does not fit ``meta``."""
    if spec.series_name.lower() != meta.name.lower():
        raise SpecError([f"metadata for {meta.name} was given for a job on {spec.series_name}"])
    problems = template_problems(spec.path_template, meta)
    if spec.recordset is not None:
        problems = [*recordset_problems(spec.recordset, meta), *problems]
    else:
        problems = [
            *_prime_key_problems(spec, meta),
            *_time_problems(spec, meta),
            *_segment_and_keyword_problems(spec, meta),
            *problems,
        ]
    if problems:
        raise SpecError(problems)

