"""jsoc_fetch: the CGI handler, exp_request parameter parsing and export planning.

`handle_jsoc_fetch` answers op=exp_request / op=exp_status (GET query or POST form) through
`state.exports` (exports.ExportManager). `RequestParams.parse` validates the parameters JSOC
reads; `build_plan` opens the records and lists every file with its name (filenamefmt), its
content recipe and the survey size (docs/jsoc-protocol.md §3.8, §4.2, §4.4).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from jsocsim.catalog import Segment, Series
from jsocsim.cgi_info import request_params
from jsocsim.fitsgen import FileRecipe
from jsocsim.images import (
    IMAGE_PROTOCOLS,
    MOVIE_ROW,
    ImageRecipe,
    ImageSpec,
    ImageSpecError,
    image_name,
)
from jsocsim.processing import (
    ProcessingError,
    ProcessSpec,
    mod_keywords,
    mod_record_name,
    mod_series_name,
    plan_transform,
    spec_from_params,
)
from jsocsim.query import QueryError, SubsetQuery, parse_recordset, single_series
from jsocsim.record import Record
from jsocsim.state import SimState, client_ip, get_state
from jsocsim.store import (
    ExportDirectory,
    ExportFile,
    ExportPlan,
    record_seed,
    stored_file_recipe,
)

METHODS = ("url_quick", "url", "url-tar")
AS_IS_PROTOCOLS = ("as-is", "su-as-is", "su")
DEFAULT_FILENAMEFMT = "{seriesname}.{recnum:%d}.{segment}"
ENUMERATE_LIMIT = 100_000  # larger requests are sized arithmetically (status 3) or refused (4)
_FIELD_RE = re.compile(r"\{([^{}:]+)(?::([^{}]*))?\}")
_MISSING_SERIES_RE = re.compile(r"Series '(.+)' does not exist")


class ExportRequestError(Exception):
    """An exp_request refused with `status` (4 unless said otherwise) and this message."""

    def __init__(self, message: str, status: int = 4) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class RequestParams:
    """The exp_request parameters the emulator uses, validated."""

    ds: str
    method: str
    protocol: str  # "fits" or "as-is" (su/su-as-is count as as-is)
    protocol_raw: str
    cparms: str | None  # fits,<cparms>: "compress Rice", "**NONE**"; None = as stored
    filenamefmt: str
    process: ProcessSpec
    skip_quality: bool
    image: ImageSpec | None = None  # jpg/mpg/mp4 exports

    @classmethod
    def parse(cls, params: dict[str, str]) -> RequestParams:
        """Validate; ExportRequestError says what was wrong and what is accepted."""
        ds = (params.get("ds") or "").strip()
        if not ds:
            raise ExportRequestError("No record set given: ds=<record set query> is required")
        seg = (params.get("seg") or "").strip()
        if seg:
            if "{" in ds:
                raise ExportRequestError("Give segments either in ds {…} or in seg=, not both")
            ds = f"{ds}{{{seg}}}"
        method = (params.get("method") or "url_quick").strip().lower()
        if method not in METHODS:
            raise ExportRequestError(f"Export method '{method}' is not supported by this "
                                     f"emulator; accepted: {', '.join(METHODS)}")
        raw = (params.get("protocol") or "as-is").strip()
        base, _, cparms = raw.partition(",")
        base = base.strip().lower()
        if base not in ("fits", *AS_IS_PROTOCOLS, *IMAGE_PROTOCOLS):
            raise ExportRequestError(
                f"Export protocol '{raw}' is not supported; accepted: as-is, fits, "
                "fits,compress Rice, fits,**NONE**, su, su-as-is, jpg|mpg|mp4[,CT=…,scaling=…,"
                "size=…,min=…,max=…]")
        try:
            process = spec_from_params(params)
            image = ImageSpec.parse(base, cparms) if base in IMAGE_PROTOCOLS else None
        except (ProcessingError, ImageSpecError) as exc:
            raise ExportRequestError(str(exc)) from None
        protocol = base if image else "fits" if base == "fits" else "as-is"
        return cls(ds=ds, method=method, protocol=protocol, protocol_raw=raw,
                   cparms=(cparms.strip() or None) if base == "fits" else None,
                   filenamefmt=params.get("filenamefmt") or DEFAULT_FILENAMEFMT,
                   process=process, skip_quality=params.get("q", "0") not in ("", "0"),
                   image=image)

    @property
    def quick(self) -> bool:
        """url_quick + as-is without processing: answered at once when every SU is online."""
        return self.method == "url_quick" and self.protocol == "as-is" and not self.process.active


# ---- filenames -----------------------------------------------------------------------------
def render_filename(fmt: str, series_name: str, record: Record, file_name: str,
                    counter: int) -> str:
    """Apply a filenamefmt template ({seriesname} {recnum:%d} {segment} {#:%04d} {KEY:A})."""

    def field_value(match: re.Match[str]) -> str:
        name, layout = match[1].strip(), (match[2] or "").strip()
        if name == "seriesname":
            return series_name
        if name == "segment":
            return file_name
        if name in ("recnum", "#"):
            number = record.recnum if name == "recnum" else counter
            return _printf(layout or "%d", number)
        text = _keyword_text(record, name)
        if text is None:
            raise ExportRequestError(f"filenamefmt field {{{name}}} is not a keyword of "
                                     f"{series_name}; use {{seriesname}}, {{recnum}}, "
                                     "{segment}, {#} or a keyword name")
        if layout.startswith("A"):
            return text.replace(".", "").replace(":", "")
        if layout.startswith("D"):
            return text.replace(".", "@").replace(":", "@")
        return _printf(layout, _number(text)) if layout.startswith("%") else text

    return _FIELD_RE.sub(field_value, fmt)


def _printf(layout: str, value: object) -> str:
    try:
        return layout.replace("ll", "").replace("l", "") % value
    except (TypeError, ValueError):
        return str(value)


def _number(text: str) -> int | float | str:
    try:
        return int(text, 0)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def _keyword_text(record: Record, name: str) -> str | None:
    """A keyword's rs_list text, or None when the series has no such keyword or prime key."""
    series = record.series
    if series.keyword(name) is not None:
        return str(record.keyword(name))
    key = series.primekey(name)
    if key is None:
        return None
    return key.display(record.prime[key.name])


# ---- planning ------------------------------------------------------------------------------
def open_subsets(state: SimState, request: RequestParams) -> list[SubsetQuery]:
    """Parse ds; one existing series for every subset (status 4 otherwise)."""
    try:
        subsets = parse_recordset(request.ds, state.catalog)
        single_series(subsets)
    except QueryError as exc:
        missing = _MISSING_SERIES_RE.search(str(exc))
        if missing:
            raise ExportRequestError(
                f"Cannot export series '{missing[1]}' - it does not exist.") from None
        raise ExportRequestError(f"Bad record-set query '{request.ds}': {exc}") from None
    return subsets


def wanted_segments(series: Series, subsets: list[SubsetQuery]) -> list[Segment]:
    """Segments in the order the {…} filters name them (all of the series' when none does)."""
    names: dict[str, None] = {}
    for q in subsets:
        if q.segments is None:
            return list(series.segments)
        names.update(dict.fromkeys(q.segments))
    # the parser checked every name against the series, so none is dropped here
    return [seg for name in names if (seg := series.segment(name)) is not None]


def size_mb(nbytes: float) -> int:
    """JSOC's MB figure: a nonzero size below 1 MB is 1, otherwise bytes // 2**20."""
    if nbytes <= 0:
        return 0
    return max(1, int(nbytes) // 2**20)


def size_limit(state: SimState, request: RequestParams, series: Series) -> int:
    """Status-3 limit: /10 for compressed storage sent uncompressed, x10 for the reverse."""
    limit = state.config.max_export_mb
    stored = bool(series.segments) and "compress" in series.segments[0].cparms.lower()
    if request.protocol != "fits" or request.cparms is None:
        return limit
    sent = "compress" in request.cparms.lower()
    if stored and not sent:
        return limit // 10
    return limit * 10 if sent and not stored else limit


def build_plan(state: SimState, request: RequestParams) -> ExportPlan:
    """Open the records and list every file (runs in a worker thread)."""
    subsets = open_subsets(state, request)
    series = subsets[0].series
    segments = wanted_segments(series, subsets)
    n = request.process.n
    try:
        count = state.engine.count(subsets)
    except QueryError as exc:
        raise ExportRequestError(f"Can not open RecordSet, bad query or too many records: "
                                 f"{exc}") from None
    selected = min(count, abs(n)) if n else count
    plan = ExportPlan(method=request.method, protocol=request.protocol, rcount=selected,
                      size_mb=0, size_limit_mb=size_limit(state, request, series),
                      processing="|".join(s.text() for s in request.process.steps),
                      quick=request.quick)
    if selected > ENUMERATE_LIMIT:
        per_record = sum(seg.size for seg in segments)
        plan.size_mb = size_mb(selected * per_record)
        if plan.size_refusal() is None:
            raise ExportRequestError(
                f"Can not open RecordSet {selected} is too many records in one request.")
        return plan
    records = list(state.engine.iter_records(subsets, 0, abs(n) or None, last=n < 0))
    if series.keyword("QUALITY") is not None and not request.skip_quality \
            and "quality" not in request.ds.lower():
        records = [r for r in records if r.image_exists]
    if not records:
        raise ExportRequestError("There are no files in this RecordSet")
    try:
        if request.image is not None:
            fill_image_plan(state, request, plan, records, segments)
        else:
            fill_plan(state, request, plan, records, segments)
    except ProcessingError as exc:
        raise ExportRequestError(str(exc)) from None
    return plan


@dataclass
class _Output:
    """How the exported records are named: the `_mod` series when processing is on."""

    series_name: str
    processed: bool
    mod_files: dict[str, str]  # segment name -> stored file name in the _mod series

    @classmethod
    def of(cls, state: SimState, series: Series, request: RequestParams) -> _Output:
        if not request.process.active:
            return cls(series.name, False, {})
        name = mod_series_name(series.name, state.catalog.names())
        files = {}
        if name in state.catalog:
            files = {seg.name.lower(): seg.stored for seg in state.catalog.get(name).segments}
        return cls(name, True, files)


def _full_shape(segment: Segment) -> tuple[int, int] | None:
    dims = segment.dims.lower().split("x")
    if len(dims) == 2 and all(d.isdigit() for d in dims):
        return int(dims[1]), int(dims[0])
    return None


def _compress(request: RequestParams, stored: FileRecipe) -> bool:
    if request.protocol != "fits" or request.cparms is None:
        return stored.compress
    return "compress" in request.cparms.lower()


def sums_path(state: SimState, record: Record, file_name: str) -> str:
    """The stored file's SUMS path (also for offline units, whose directory is not served)."""
    partition = 1 + record.sunum % state.engine.config.sum_partitions
    return f"/SUM{partition}/D{record.sunum}/S{record.su_slot:05d}/{file_name}"


def _export_names(request: RequestParams, out: _Output, record: Record, seg: Segment,
                  file_name: str, counter: int) -> tuple[str, str | None]:
    """(name in the export directory, name of the directory segment holding it or None).

    A directory segment is named once by filenamefmt ({segment} = the directory's name); its
    files keep their own names inside it, as JSOC's symlinked (as-is) or copied (fits) trees.
    """
    stored = out.mod_files.get(seg.name.lower(), seg.stored) if out.processed else seg.stored
    if seg.is_directory:
        directory = render_filename(request.filenamefmt, out.series_name, record, stored,
                                    counter)
        return f"{directory}/{file_name.split('/', 1)[-1]}", directory
    out_file = out.mod_files.get(seg.name.lower(), file_name) if out.processed else file_name
    return render_filename(request.filenamefmt, out.series_name, record, out_file,
                           counter), None


def record_files(state: SimState, request: RequestParams, out: _Output, record: Record,
                 segments: list[Segment], counter: int) -> tuple[list[ExportFile], float]:
    """Export files of one record and their survey bytes (missing files have no recipe)."""
    name = record.name()
    keywords = record.keyword_values() if request.protocol == "fits" or out.processed else None
    record_name = mod_record_name(name, out.series_name) if out.processed else name
    files, nbytes = [], 0.0
    for seg in segments:
        shape = _full_shape(seg)
        transform = plan_transform(request.process, keywords or {}, shape)
        row_name = record_name if request.protocol == "fits" else f"{record_name}{{{seg.name}}}"
        missing = record.file_missing(seg.name)
        for file_name, size in record.segment_files(seg.name):
            counter += 1
            filename, directory = _export_names(request, out, record, seg, file_name, counter)
            stored = stored_file_recipe(state.config, record, seg, file_name)
            header = None
            if request.protocol == "fits" and stored.is_fits():
                header = mod_keywords(keywords or {}, transform, shape) if transform else keywords
            recipe = None if missing else dataclasses.replace(
                stored, filename=filename, keywords=header, transform=transform,
                compress=_compress(request, stored) if stored.is_fits() else False)
            holder = (None if directory is None
                      else ExportDirectory(directory, sums_path(state, record, seg.stored)))
            files.append(ExportFile(
                row_name, filename, sums_path(state, record, file_name), recipe, holder))
            nbytes += 0 if missing else size * (transform.size_ratio() if transform else 1.0)
    return files, nbytes


def fill_plan(state: SimState, request: RequestParams, plan: ExportPlan, records: list[Record],
              segments: list[Segment]) -> None:
    """Files, survey size, offline flag, duplicate digest and keyword rows of the export."""
    series = records[0].series
    out = _Output.of(state, series, request)
    total = 0.0
    for record in records:
        files, nbytes = record_files(state, request, out, record, segments, len(plan.files))
        plan.files.extend(files)
        total += nbytes
        plan.offline |= not record.online and not record.nearline
        if request.protocol == "as-is" and not request.quick:
            plan.keyword_rows.append((record.name(), {
                kw.name: str(record.keyword(kw.name)) for kw in series.keywords}))
    plan.rcount = len(records)
    plan.size_mb = size_mb(total)
    plan.digest = export_digest(request, records, segments)


def export_digest(request: RequestParams, records: list[Record], segments: list[Segment]) -> str:
    """JSOC's duplicate-detection MD5: records as a recnum list, filenamefmt, process,
    protocol, method."""
    recnums = ",".join(str(r.recnum) for r in records)
    spec = f"{records[0].series.name}[:{recnums}]{{{','.join(s.name for s in segments)}}}"
    text = "|".join([spec, request.filenamefmt, request.process.text(), request.protocol_raw,
                     request.method])
    return hashlib.md5(text.encode()).hexdigest()


def fill_image_plan(state: SimState, request: RequestParams, plan: ExportPlan,
                    records: list[Record], segments: list[Segment]) -> None:
    """jpg/mpg/mp4: a JPEG per record from its first exported segment, and for movies one
    movie of those frames listed first (jsoc_export_as_images)."""
    spec = request.image
    assert spec is not None
    seg, series = segments[0], records[0].series
    for record in records:
        recipe = ImageRecipe(
            seed=record_seed(state.config, record.name(), seg.name, seg.stored),
            filename=image_name(record, series.name), segment_type=seg.type,
            nbytes=int(state.config.file_size), compress=False, spec=spec)
        plan.files.append(ExportFile(record.name(), recipe.filename,
                                     sums_path(state, record, seg.stored), recipe))
    if spec.movie:
        movie = ImageRecipe(seed=0, filename=f"{series.name}.{spec.protocol}",
                            segment_type=seg.type, nbytes=0, compress=False, spec=spec,
                            frames=tuple(f.recipe for f in plan.files))
        plan.files.insert(0, ExportFile(MOVIE_ROW, movie.filename, "", movie))
    plan.offline = any(not r.online and not r.nearline for r in records)
    plan.rcount = len(records)
    plan.size_mb = size_mb(sum(seg.size for _ in records))
    plan.digest = export_digest(request, records, segments)


# ---- the CGI -------------------------------------------------------------------------------
async def handle_jsoc_fetch(request: web.Request) -> web.Response:
    """jsoc_fetch?op=exp_request|exp_status (JSON; format=txt gives key=value lines)."""
    state = get_state(request)
    params = await request_params(request)
    op = (params.get("op") or "").strip()
    if op == "exp_request":
        reply = await state.exports.request(params, client_ip(request))
    elif op == "exp_status":
        reply = state.exports.status((params.get("requestid") or "").strip() or None)
    else:
        reply = {"status": 4, "error": f"jsoc_fetch: unsupported op '{op}'; accepted: "
                                       "exp_request, exp_status"}
    if (params.get("format") or "json").lower() == "txt":
        return web.Response(text=reply_text(reply), content_type="text/plain")
    return web.json_response(reply)


def reply_text(reply: dict[str, Any]) -> str:
    """format=txt: key=value lines, then the data rows after # DATA."""
    lines = [f"{k}={v}" for k, v in reply.items() if k != "data"]
    if "data" in reply:
        lines.append("# DATA")
        lines += [f"{row['record']}\t{row['filename']}" for row in reply["data"]]
    return "\n".join(lines) + "\n"
