"""Route handlers of /api/v1 and the endpoint table the app and the OpenAPI document share."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from service.api.deletion import collect_job_files, delete_job_files, delete_manifest
from service.api.intake import SeriesLookup, parse_spec, read_json_object
from service.api.openapi import Endpoint, HeaderParam
from service.api.problems import (
    ApiProblem,
    Handler,
    json_response,
    json_text,
    validation_problem,
)
from service.api.rates import (
    RateTracker,
    average_rate,
    estimated_files,
    estimated_total,
    eta_seconds,
)
from service.api.refetch import RetryBody, refetch_bad_files
from service.api.schemas import (
    DeleteQuery,
    DeleteResult,
    FileListQuery,
    FilePage,
    JobDetail,
    JobListQuery,
    JobOut,
    JobPage,
    OpenApiDocument,
    PreviewOut,
    WorkerList,
    export_out,
    file_out,
    job_detail,
    job_out,
    mirror_status,
    worker_conditions_out,
    worker_out,
)
from service.api.shared_reads import SharedReads
from service.api.vetting import job_recordset, preview_spec, vet_at_jsoc, vet_spec
from service.db.repo import InvalidTransition, NotFound, Repo
from service.jobspec import JobSpec
from service.jsoc.client import JsocClient
from service.settings import Settings
from service.states import JOB_UNPAUSED

API_PREFIX = "/api/v1"
MAX_IDEMPOTENCY_KEY = 255
IDEMPOTENCY_KEY_PATTERN = f"^[\\x20-\\x7e]{{1,{MAX_IDEMPOTENCY_KEY}}}$"
IDEMPOTENCY_KEY_RE = re.compile(IDEMPOTENCY_KEY_PATTERN)
Q = TypeVar("Q", bound=BaseModel)


@dataclass
class ApiContext:
    """What the handlers need: settings, the repository, series metadata, rate samples."""

    settings: Settings
    repo: Repo
    series_lookup: SeriesLookup
    version: str
    rates: RateTracker = field(default_factory=RateTracker)
    openapi: dict[str, Any] = field(default_factory=dict)
    status_reads: SharedReads = field(default_factory=SharedReads)  # GET /jobs/{id} bodies
    jsoc: JsocClient | None = None  # opened with the app


CONTEXT = web.AppKey("jsoc_bulk_api", ApiContext)


def ctx(request: web.Request) -> ApiContext:
    return request.app[CONTEXT]


def parse_query(request: web.Request, model: type[Q]) -> Q:
    """Query parameters through a pydantic model; 400 naming the bad or unknown parameter."""
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as exc:
        problem = validation_problem(exc, "query parameters", status=400)
        accepted = ", ".join(model.model_fields)
        problem.detail += f" (accepted parameters: {accepted})"
        raise problem from None


@web.middleware
async def repo_errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Unknown job -> 404, refused state change -> 409."""
    try:
        return await handler(request)
    except NotFound as exc:
        raise ApiProblem(404, "not-found", "Job not found", str(exc)) from None
    except InvalidTransition as exc:
        raise ApiProblem(409, "invalid-state-change", "Invalid state change", str(exc)) from None


@web.middleware
async def job_change_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A request that may change a job (any method but GET and HEAD on a job's path) drops
    the job's shared status body, whatever its outcome."""
    job_id = request.match_info.get("job_id")
    if job_id is None or request.method in ("GET", "HEAD"):
        return await handler(request)
    try:
        return await handler(request)
    finally:
        ctx(request).status_reads.forget(job_id)


def _job_id(request: web.Request) -> str:
    return request.match_info["job_id"]


def _location(job_id: str) -> str:
    return f"{API_PREFIX}/jobs/{job_id}"


def _canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def _idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not IDEMPOTENCY_KEY_RE.fullmatch(key):
        raise ApiProblem(400, "invalid-idempotency-key", "Invalid Idempotency-Key",
                         f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII "
                         "characters, e.g. a UUID")
    return key


async def submit_job(request: web.Request) -> web.Response:
    """POST /jobs: validate the spec (model, then JSOC metadata) and queue the job."""
    c = ctx(request)
    key = _idempotency_key(request)
    spec = parse_spec(await read_json_object(request, "job spec"))
    meta = await vet_spec(spec, c.series_lookup, c.jsoc)
    notify = spec.notify_or(c.settings.email)
    if notify is None:
        raise ApiProblem(422, "notify-required", "Notify email required",
                         "give notify (an email registered with JSOC): the server has no "
                         "default email configured (JSOC_BULK_EMAIL)")
    verdict = await vet_at_jsoc(spec, meta, notify, c.jsoc)
    stored = spec.model_dump(mode="json")
    job, created = await c.repo.create_job(stored, notify_email=notify, priority=spec.priority,
                                           idempotency_key=key, follow=spec.follow)
    if created and verdict is not None and verdict.outcome != "ok":
        await c.repo.add_event(job.id, "notify-unchecked", f"{verdict.message}; the address "
                               "is checked again before the first export", level="warning")
    if not created and _canonical(job.spec) != _canonical(stored):
        raise ApiProblem(422, "idempotency-key-reused", "Idempotency-Key reused",
                         f"Idempotency-Key {key!r} was already used for job {job.id} with a "
                         "different spec; use a new key for a new job")
    return json_response(job_out(job), status=202 if created else 200,
                         headers={"Location": _location(job.id)})


async def preview_job(request: web.Request) -> web.Response:
    """POST /jobs/preview: what the spec selects (records, bytes, exports), nothing stored."""
    c = ctx(request)
    spec = parse_spec(await read_json_object(request, "job spec"))
    result = await preview_spec(spec, c.series_lookup, c.jsoc, c.settings)
    return json_response(PreviewOut(**vars(result)))


async def list_jobs(request: web.Request) -> web.Response:
    """GET /jobs: newest first, optionally one state, paginated by offset."""
    q = parse_query(request, JobListQuery)
    jobs = await ctx(request).repo.list_jobs(q.state, limit=q.limit + 1, offset=q.offset)
    next_offset = q.offset + q.limit if len(jobs) > q.limit else None
    return json_response(JobPage(items=[job_out(j) for j in jobs[: q.limit]], limit=q.limit,
                                 offset=q.offset, next_offset=next_offset))


async def get_job(request: web.Request) -> web.Response:
    """GET /jobs/{id}: counts by state, bytes, rate, ETA and recent errors; for a follow job
    also how far the mirror is covered and how far behind JSOC's newest data it is."""
    c = ctx(request)
    job_id = _job_id(request)
    body = await c.status_reads.get(job_id, lambda: _job_detail_body(c, job_id))
    return web.Response(body=body, content_type="application/json")


async def _job_detail_body(c: ApiContext, job_id: str) -> bytes:
    return json_text(await _job_detail(c, job_id)).encode()


async def _job_detail(c: ApiContext, job_id: str) -> JobDetail:
    summary = await c.repo.job_summary(job_id)
    job = summary.job
    rate = c.rates.observe(job.id, summary.bytes_done)
    if rate is None:
        rate = average_rate(summary.bytes_done, job.created_at, datetime.now(UTC))
    total = estimated_total(summary)
    eta = eta_seconds(summary.bytes_done, total, rate) if job.state in JOB_UNPAUSED \
        and not job.follow else None
    mirror = mirror_status(await c.repo.follow_state(job.id)) if job.follow else None
    detail = job_detail(summary, rate, eta, total, mirror)
    detail.files_total = estimated_files(summary, total)
    detail.download_dir = _root(c)
    detail.active_exports = [export_out(e) for e in await c.repo.active_exports(job.id)]
    detail.recordset = await job_recordset(job.spec, c.series_lookup)
    if job.state in ("queued", "running"):
        detail.conditions = worker_conditions_out(await c.repo.worker_conditions(
            stale_after=worker_stale_after(c.settings)))
    return detail


def _root(c: ApiContext) -> str | None:
    root = c.settings.download_dir
    return str(root.resolve()) if root is not None else None


async def list_files(request: web.Request) -> web.Response:
    """GET /jobs/{id}/files: the job's files (not a url-tar export's tar row) in id order,
    optionally one state, paginated by offset or after_id."""
    q = parse_query(request, FileListQuery)
    files = await ctx(request).repo.list_files(_job_id(request), q.state, limit=q.limit + 1,
                                               offset=q.offset, after_id=q.after_id,
                                               tar_rows=False)
    next_offset = q.offset + q.limit if len(files) > q.limit else None
    root = ctx(request).settings.download_dir
    return json_response(FilePage(items=[file_out(f, root) for f in files[: q.limit]],
                                  limit=q.limit,
                                  offset=q.offset, next_offset=next_offset))


def _action(method_name: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        job = await getattr(ctx(request).repo, method_name)(_job_id(request))
        return json_response(job_out(job))

    handler.__name__ = method_name
    return handler


async def retry_job(request: web.Request) -> web.Response:
    """POST /jobs/{id}/retry: failed files and chunks back to work; with ``files`` (done files
    a verify found bad), those the API finds bad too are fetched again."""
    c = ctx(request)
    body = RetryBody()
    if request.can_read_body:
        try:
            body = RetryBody.model_validate(await read_json_object(request, "retry body"))
        except ValidationError as exc:
            raise validation_problem(exc, "retry body") from None
    job_id = _job_id(request)
    root = c.settings.download_dir
    if body.files and root is not None and not await refetch_bad_files(c.repo, root, job_id,
                                                                        body.files):
        job = await c.repo.get_job(job_id)  # every listed file checks out: nothing to do
        if job is None:
            raise NotFound(f"no job with id {job_id!r}")
        return json_response(job_out(job))
    return json_response(job_out(await c.repo.retry_job(job_id)))


async def delete_job(request: web.Request) -> web.Response:
    """DELETE /jobs/{id}: forget the job; with delete_files=true also its files on disk."""
    c = ctx(request)
    job_id = _job_id(request)
    q = parse_query(request, DeleteQuery)
    files = await collect_job_files(c.repo, job_id) if q.delete_files else []
    job = await c.repo.get_job(job_id)
    await c.repo.delete_job(job_id)
    c.rates.forget(job_id)
    deleted, kept = await delete_job_files(c.repo, c.settings.download_dir, files)
    if job is not None:
        delete_manifest(c.settings.download_dir, job_id, job.spec.get("path_template") or
                        "{series}/{filename}", files)
    return json_response(DeleteResult(id=job_id, deleted=True, files_deleted=deleted,
                                      files_kept=kept))


async def list_workers(request: web.Request) -> web.Response:
    """GET /workers: workers with heartbeats and what each holds."""
    c = ctx(request)
    now = datetime.now(UTC)
    workers = await c.repo.list_workers()
    return json_response(WorkerList(items=[worker_out(w, now, worker_stale_after(c.settings))
                                           for w in workers]))


def worker_stale_after(settings: Settings) -> float:
    """Seconds without a heartbeat after which a worker counts as gone."""
    return max(3 * settings.heartbeat_seconds, settings.lease_seconds)


async def openapi_json(request: web.Request) -> web.Response:
    """GET /openapi.json: this API's OpenAPI document."""
    return json_response(ctx(request).openapi)


JOB_ERRORS = (404,)
ENDPOINTS: list[Endpoint] = [
    Endpoint("POST", "/jobs", submit_job, "submitJob", "Submit a job", ok_status=202,
             response=JobOut, body=JobSpec, errors=(503,),
             headers=(HeaderParam("Idempotency-Key", "Retries with the same key return the "
                                  "same job (200) instead of a new one",
                                  {"type": "string", "minLength": 1,
                                   "maxLength": MAX_IDEMPOTENCY_KEY,
                                   "pattern": IDEMPOTENCY_KEY_PATTERN}),),
             extra_ok={200: "The job created earlier with this Idempotency-Key"}),
    Endpoint("POST", "/jobs/preview", preview_job, "previewJob",
             "What a job spec selects: records, bytes, exports (nothing is stored)",
             response=PreviewOut, body=JobSpec, errors=(503,)),
    Endpoint("GET", "/jobs", list_jobs, "listJobs", "List jobs", response=JobPage,
             query=JobListQuery, errors=(400,)),
    Endpoint("GET", "/jobs/{job_id}", get_job, "getJob", "Job status and progress",
             response=JobDetail, errors=JOB_ERRORS),
    Endpoint("GET", "/jobs/{job_id}/files", list_files, "listFiles", "List a job's files",
             response=FilePage, query=FileListQuery, errors=(400, 404)),
    *[Endpoint("POST", f"/jobs/{{job_id}}/{action}", _action(f"{action}_job"), f"{action}Job",
               f"{action.capitalize()} a job", response=JobOut, errors=(404, 409))
      for action in ("cancel", "pause", "resume")],
    Endpoint("POST", "/jobs/{job_id}/retry", retry_job, "retryJob", "Retry a job's failed "
             "files and chunks, or fetch again files a verify found bad", response=JobOut,
             body=RetryBody, errors=(400, 404, 409)),
    Endpoint("DELETE", "/jobs/{job_id}", delete_job, "deleteJob", "Delete a job",
             response=DeleteResult, query=DeleteQuery, errors=(400, 404, 409)),
    Endpoint("GET", "/workers", list_workers, "listWorkers", "List workers",
             response=WorkerList),
    Endpoint("GET", "/openapi.json", openapi_json, "openapi", "This OpenAPI document",
             response=OpenApiDocument),
]
