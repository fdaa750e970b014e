"""Checks of a submitted job that ask JSOC, beyond the series' metadata (``intake``): the
closest series names for a misspelt one, wavelengths the series has, a range that selects
nothing, and the notify address (``checkAddress``). Each answers with a 4xx problem saying what
to do; when JSOC cannot be asked, the job is taken and checked again by the worker.
"""

from __future__ import annotations

from typing import Any

from service.api.intake import SeriesLookup, check_against_jsoc
from service.api.problems import ApiProblem, FieldError, summarize
from service.jobspec import JobSpec, SpecError
from service.jsoc.client import JsocClient
from service.jsoc.lookups import EmailVerdict, check_email, series_names, series_wavelengths
from service.jsoc.metadata import SeriesMeta
from service.jsoc.status import JsocError, StatusKind
from service.planning.recordsets import build_recordset
from service.preview import Preview, empty_message, preview_job
from service.settings import Settings
from service.validation import (
    WAVELENGTH_KEY,
    check_series_exists,
    parse_job_spec,
    wavelength_problems,
)


async def _series_hint(spec: JobSpec, jsoc: JsocClient, problem: ApiProblem) -> ApiProblem:
    """The unknown-series problem, with the closest names JSOC lists when it can say."""
    try:
        check_series_exists(spec.series_name, await series_names(jsoc))
    except SpecError as exc:
        field = "series" if spec.series else "recordset"
        return ApiProblem(422, "unknown-series", "Unknown series", exc.problems[0],
                          [FieldError(field=field, message=exc.problems[0])])
    except JsocError:
        pass  # JSOC cannot list its series now: the plain answer
    return problem


def _given_wavelengths(spec: JobSpec) -> list[float]:
    values = [float(w) for w in spec.wavelengths or []]
    for name, value in spec.prime_keys.items():
        if name.upper() == WAVELENGTH_KEY:
            for item in value if isinstance(value, list) else [value]:
                try:
                    values.append(float(item))
                except ValueError:
                    continue  # a range or pattern: left to JSOC
    return values


async def check_wavelengths(spec: JobSpec, meta: SeriesMeta, jsoc: JsocClient) -> None:
    """422 naming the series' wavelengths when one asked for is not among them."""
    wanted = _given_wavelengths(spec)
    if not wanted or WAVELENGTH_KEY not in {k.upper() for k in meta.primekey_names}:
        return
    try:
        available = await series_wavelengths(jsoc, meta)
    except JsocError:
        return  # cannot tell now; JSOC selects nothing for a wavelength it lacks
    problems = wavelength_problems(wanted, meta.name, available)
    if problems:
        errors = [FieldError(field="wavelengths", message=p) for p in problems]
        raise ApiProblem(422, "invalid-job-spec", "Invalid job spec",
                         f"the job spec does not fit the series: {summarize(errors)}", errors)


async def vet_spec(spec: JobSpec, lookup: SeriesLookup, jsoc: JsocClient | None) -> SeriesMeta:
    """The series' metadata, with the spec checked against it and (when a JSOC client is
    there) against the series' names and wavelengths."""
    try:
        meta = await check_against_jsoc(spec, lookup)
    except ApiProblem as problem:
        if problem.slug == "unknown-series" and jsoc is not None:
            raise await _series_hint(spec, jsoc, problem) from None
        raise
    if jsoc is not None:
        await check_wavelengths(spec, meta, jsoc)
    return meta


async def refuse_empty(spec: JobSpec, meta: SeriesMeta, jsoc: JsocClient) -> None:
    """422 for a job whose range selects no record at JSOC (a mirror may start empty)."""
    if spec.follow:
        return
    recordset = build_recordset(spec, meta)
    try:
        count = await jsoc.rs_summary(recordset)
    except JsocError as exc:
        if exc.kind is StatusKind.TRANSIENT:
            return  # cannot count now: the worker finds out
        raise ApiProblem(422, "invalid-recordset", "Invalid record set",
                         f"JSOC refused the job's record set {recordset}: {exc.message}") from None
    if count == 0:
        raise ApiProblem(422, "no-records", "No records",
                         f"the job would select nothing: {empty_message(recordset, meta)}; "
                         "check series, times and filters with POST /api/v1/jobs/preview")


async def vet_notify(email: str, jsoc: JsocClient) -> EmailVerdict:
    """422 saying what to do for an address JSOC refuses; otherwise JSOC's verdict."""
    try:
        verdict = await check_email(jsoc, email)
    except JsocError as exc:
        return EmailVerdict("unknown", f"JSOC's address check failed: {exc.message}")
    if verdict.outcome == "refused":
        raise ApiProblem(422, "notify-not-registered", "Notify email not accepted by JSOC",
                         verdict.message, [FieldError(field="notify", message=verdict.message)])
    return verdict


async def vet_at_jsoc(spec: JobSpec, meta: SeriesMeta, notify: str,
                      jsoc: JsocClient | None) -> EmailVerdict | None:
    """The notify address and the record count, at JSOC (None without a client)."""
    if jsoc is None:
        return None
    verdict = await vet_notify(notify, jsoc)
    await refuse_empty(spec, meta, jsoc)
    return verdict


async def preview_spec(spec: JobSpec, lookup: SeriesLookup, jsoc: JsocClient | None,
                       settings: Settings) -> Preview:
    """POST /jobs/preview: the spec checked as for a submit, then counted at JSOC."""
    meta = await vet_spec(spec, lookup, jsoc)
    if jsoc is None:
        raise ApiProblem(503, "jsoc-unavailable", "JSOC unavailable",
                         "the API has no JSOC client to preview the job with")
    try:
        return await preview_job(jsoc, spec, meta, max_records=settings.max_chunk_records,
                                 max_bytes=settings.max_chunk_bytes)
    except JsocError as exc:
        if exc.kind is StatusKind.TRANSIENT:
            raise ApiProblem(503, "jsoc-unavailable", "JSOC unavailable",
                             f"cannot preview the job: JSOC did not answer ({exc.message}); "
                             "try again later", headers={"Retry-After": "60"}) from None
        raise ApiProblem(422, "invalid-recordset", "Invalid record set",
                         f"JSOC refused the job's record set: {exc.message}") from None


async def job_recordset(spec_data: dict[str, Any], lookup: SeriesLookup) -> str | None:
    """The record-set string a stored job resolved to (None for a mirror, or when the
    series' metadata cannot be had now)."""
    try:
        spec = parse_job_spec(spec_data)
        if spec.recordset is not None:
            return spec.recordset
        if spec.follow:
            return None
        return build_recordset(spec, await lookup(spec.series_name))
    except (ValueError, JsocError):
        return None
