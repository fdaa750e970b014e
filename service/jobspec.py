"""The job spec (REST and CLI): a pydantic model with clear error messages, and path templates.

A job is either ``series`` + ``start`` (+ ``end``, or ``follow``) with optional filters, or a
raw DRMS ``recordset``. ``start`` and ``end`` select what sunpy's ``a.Time(start, end)``
selects: JSOC's ``start-end`` range (docs/jsoc-protocol.md §6.3), from the slot nearest
``start`` to the slot nearest ``end``, both included. Times are parsed by ``service.timeutil``
(JSOC, ISO, sunpy's forms).
"""

from __future__ import annotations

import contextlib
import re
import string
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Literal, NoReturn

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)
from pydantic.config import JsonDict

from service.safetext import json_text_problems, name_problem
from service.timeutil import parse_calendar, parse_duration, parse_time

PROTOCOLS = ("fits", "as-is")
METHODS = ("auto", "url", "url_quick", "url-tar")
WHERE_OPS = ("=", "!=", "<", "<=", ">", ">=")
MAX_RECORDSET_CHARS = 8192  # DRMS_MAXQUERYLEN
PRIORITY_RANGE = (-(2**31), 2**31 - 1)  # the jobs.priority column (32-bit on Postgres)
MAX_DURATION_DAYS = 36500  # cadence, lag, check_interval: at most 100 years
MAX_PATH_COMPONENT_BYTES = 255  # NAME_MAX of common file systems
# What the OpenAPI schema says a body needs (the model's own rules are in _shape_problems).
_SPEC_SHAPES: JsonDict = {"anyOf": [{"required": ["series", "start", "end"]},
                                    {"required": ["series", "start", "follow"],
                                     "properties": {"follow": {"const": True}}},
                                    {"required": ["recordset"]}]}
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SERIES_RE = re.compile(r"[A-Za-z0-9_]+\.[A-Za-z0-9_]+")
_WHERE_RE = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(!=|<=|>=|=|<|>)\s*(.*?)\s*")
_EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_FORBIDDEN_VALUE_CHARS = set("[]{}")

PrimeValue = StrictInt | StrictFloat | StrictStr


class SpecError(ValueError):
    """An invalid job spec. ``problems`` holds one clear message per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def _fail(message: str) -> NoReturn:
    raise ValueError(message)


def _maybe(convert: Callable[[str], float], value: str | None) -> float | None:
    return None if value is None else convert(value)


def format_value(value: int | float | str) -> str:
    """A prime-key or keyword value as text: 171.0 -> '171', 1.5 -> '1.5'."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class WhereClause(BaseModel):
    """One keyword comparison; clauses are combined with AND."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    keyword: str
    op: str
    value: StrictInt | StrictFloat | StrictStr

    @model_validator(mode="after")
    def _names(self) -> WhereClause:
        if not _NAME_RE.fullmatch(self.keyword):
            _fail(f"where keyword must be a keyword name like QUALITY; got {self.keyword!r}")
        if self.op not in WHERE_OPS:
            _fail(f"where op must be one of {', '.join(WHERE_OPS)}; got {self.op!r}")
        return self

    def to_sql(self) -> str:
        """``K op 'v'``: values always single-quoted, as sunpy does (docs/jsoc-protocol.md §6.4)."""
        text = format_value(self.value).replace("'", "''")
        return f"{self.keyword} {self.op} '{text}'"


def parse_where_text(text: str) -> dict[str, Any]:
    """``"QUALITY = 0"`` or ``"INSTRUME = 'FUV'"`` -> {keyword, op, value}."""
    match = _WHERE_RE.fullmatch(text)
    if match is None or not match[3]:
        _fail(f"cannot read where condition {text!r}: expected 'KEYWORD OP VALUE' with OP one "
              f"of {', '.join(WHERE_OPS)}, e.g. 'QUALITY = 0' or 'EXPTIME > 1.5'")
    value = match[3]
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    return {"keyword": match[1], "op": match[2], "value": value}


class JobSpec(BaseModel):
    """What to download and how. See the module docstring for the two shapes."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False,
                              json_schema_extra=_SPEC_SHAPES)

    series: str | None = None
    start: str | None = None
    end: str | None = None
    recordset: str | None = None
    prime_keys: dict[str, PrimeValue | list[PrimeValue]] = Field(default_factory=dict)
    wavelengths: list[StrictInt | StrictFloat] | None = None
    where: list[WhereClause] = Field(default_factory=list)
    segments: list[str] | None = None
    cadence: str | None = None
    protocol: Literal["fits", "as-is"] = "fits"
    method: Literal["auto", "url", "url_quick", "url-tar"] = "auto"
    notify: str | None = None
    path_template: str = "{series}/{filename}"
    priority: StrictInt = Field(0, ge=PRIORITY_RANGE[0], le=PRIORITY_RANGE[1])
    follow: bool = False
    lag: str | None = None
    check_interval: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        problems = json_text_problems(data) if isinstance(data, dict) else []
        if problems:  # also a spec stored before input was checked: it fails clearly
            _fail(f"the job spec has text the service cannot store: {'; '.join(problems)}")
        return data

    @field_validator("protocol", "method", mode="before")
    @classmethod
    def _choice(cls, v: Any, info: Any) -> Any:
        choices = PROTOCOLS if info.field_name == "protocol" else METHODS
        if isinstance(v, str) and v.lower() in choices:
            return v.lower()
        _fail(f"{info.field_name} must be one of {', '.join(choices)}; got {v!r}")

    @field_validator("series")
    @classmethod
    def _series_name(cls, v: str | None) -> str | None:
        if v is not None and (not _SERIES_RE.fullmatch(v.strip()) or len(v) > 64):
            _fail("series must be a DRMS series name like hmi.M_720s (at most 64 characters); "
                  f"got {v!r}")
        return v.strip() if v else v

    @field_validator("start", "end", mode="before")
    @classmethod
    def _time_string(cls, v: Any) -> Any:
        if v is not None:
            parse_time(v)  # raises TimeFormatError (a ValueError) listing accepted formats
        return v

    @field_validator("cadence", "lag", "check_interval", mode="before")
    @classmethod
    def _duration(cls, v: Any, info: Any) -> Any:
        if v is None:
            return v
        try:
            seconds = parse_duration(v)
        except ValueError as exc:
            _fail(f"{info.field_name}: {exc}")
        if seconds > MAX_DURATION_DAYS * 86400:
            _fail(f"{info.field_name} must be at most {MAX_DURATION_DAYS}d (100 years); got {v!r}")
        return str(v) if isinstance(v, str) else f"{float(v):g}s"

    @field_validator("recordset")
    @classmethod
    def _recordset_text(cls, v: str | None) -> str | None:
        if v is not None and (not _SERIES_RE.match(v.strip()) or len(v) > MAX_RECORDSET_CHARS):
            _fail("recordset must be a DRMS record-set string starting with a series name, e.g. "
                  f"hmi.M_720s[2014.01.01_TAI/1d], at most {MAX_RECORDSET_CHARS} characters; "
                  f"got {v[:80]!r}")
        return v.strip() if v else v

    @field_validator("prime_keys")
    @classmethod
    def _prime_values(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name, value in v.items():
            if not _NAME_RE.fullmatch(name):
                _fail(f"prime_keys names must be key names like HARPNUM; got {name!r}")
            values = value if isinstance(value, list) else [value]
            if not values:
                _fail(f"prime_keys.{name} is an empty list; give a value or a list of values")
            for item in (i for i in values if isinstance(i, str)):
                if not item.strip() or _FORBIDDEN_VALUE_CHARS & set(item):
                    _fail(f"prime_keys.{name} value {item!r} must be non-empty without [ ] {{ }}")
        return v

    @field_validator("wavelengths", "segments", mode="before")
    @classmethod
    def _single_to_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, int | float | str) and not isinstance(v, bool) else v

    @field_validator("segments")
    @classmethod
    def _segment_names(cls, v: list[str] | None) -> list[str] | None:
        for name in v or []:
            if not _NAME_RE.fullmatch(name):
                _fail(f"segments must be segment names like magnetogram; got {name!r}")
        if v is not None and not v:
            _fail("segments is an empty list; leave it out to get every segment")
        return v

    @field_validator("where", mode="before")
    @classmethod
    def _where_items(cls, v: Any) -> Any:
        if isinstance(v, str | dict):
            v = [v]
        if not isinstance(v, list):
            _fail("where must be a list of conditions like 'QUALITY = 0' or {keyword, op, value}")
        return [parse_where_text(item) if isinstance(item, str) else item for item in v]

    @field_validator("notify")
    @classmethod
    def _email(cls, v: str | None) -> str | None:
        if v is not None and not _EMAIL_RE.fullmatch(v.strip()):
            _fail(f"notify must be an email address registered with JSOC; got {v!r}")
        return v.strip() if v else v

    @field_validator("path_template")
    @classmethod
    def _template(cls, v: str) -> str:
        check_template_shape(v)
        return v

    @model_validator(mode="after")
    def _shape(self) -> JobSpec:
        for problem in _shape_problems(self):
            _fail(problem)
        return self

    # --- derived values --------------------------------------------------------------------

    @property
    def start_tai(self) -> float | None:
        return _maybe(parse_time, self.start)

    @property
    def end_tai(self) -> float | None:
        return _maybe(parse_time, self.end)

    @property
    def cadence_seconds(self) -> float | None:
        return _maybe(parse_duration, self.cadence)

    @property
    def lag_seconds(self) -> float | None:
        return _maybe(parse_duration, self.lag)

    @property
    def check_interval_seconds(self) -> float | None:
        return _maybe(parse_duration, self.check_interval)

    @property
    def series_name(self) -> str:
        """The series, also for a recordset job (its leading name)."""
        if self.series:
            return self.series
        match = _SERIES_RE.match(self.recordset or "")
        return match[0] if match else ""

    @property
    def effective_method(self) -> str:
        """``auto`` -> url_quick for as-is, url for fits; url_quick with fits -> url (as drms).
        Per chunk, ``auto`` may still become url-tar (``stages.method_choice``)."""
        if self.method == "auto":
            return "url_quick" if self.protocol == "as-is" else "url"
        if self.method == "url_quick" and self.protocol != "as-is":
            return "url"
        return self.method

    def notify_or(self, default: str | None) -> str | None:
        """The notify address, falling back to the configured email."""
        return self.notify or default


_RECORDSET_EXCLUDES = ("series", "start", "end", "prime_keys", "wavelengths", "where", "segments",
                       "cadence", "follow")


def _shape_problems(spec: JobSpec) -> list[str]:
    """Cross-field rules: one of series/recordset, start/end/follow, durations."""
    if spec.recordset is not None:
        mixed = [name for name in _RECORDSET_EXCLUDES if name in spec.model_fields_set
                 and getattr(spec, name) not in (None, False, [], {})]
        if mixed:
            replaced = ", ".join(_RECORDSET_EXCLUDES)
            return [f"recordset replaces {replaced}; got also {', '.join(mixed)}"]
        return []
    if spec.series is None:
        return ["give either series (with start and end) or recordset"]
    if spec.start is None:
        return ["start is required with series (a time like 2014.01.01_00:00:00_TAI)"]
    if spec.follow:
        return ["follow jobs have no end; leave end out"] if spec.end is not None else []
    if spec.end is None:
        return ["end is required unless follow is true"]
    if (spec.lag or spec.check_interval) and not spec.follow:
        return ["lag and check_interval only apply to follow jobs (follow: true)"]
    start, end = parse_time(spec.start), parse_time(spec.end)
    if start > end:
        return [f"start ({spec.start}) must not be after end ({spec.end}); both ends are "
                "included, as in sunpy's a.Time(start, end) and JSOC's start-end"]
    return []


# --- path templates ----------------------------------------------------------------------------

BUILTIN_TEMPLATE_FIELDS = ("series", "record", "segment", "filename", "recnum")
_SAMPLE_TIME = datetime(2014, 1, 1, 0, 0, 0)


def template_fields(template: str) -> list[tuple[str, str]]:
    """(field name, format spec) pairs of a path template, in order."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        _fail(f"path_template {template!r} is not a valid template ({exc}); write fields as "
              "{field} or {field:format} and literal braces as {{ }}")
    fields = []
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if not _NAME_RE.fullmatch(name):
            _fail(f"path_template field {{{name}}} must be a plain name such as {{series}} or "
                  f"{{T_REC:%Y/%m/%d}}; allowed: {', '.join(BUILTIN_TEMPLATE_FIELDS)} and the "
                  "series' prime keys and keywords")
        if conversion or "{" in (spec or ""):
            _fail(f"path_template field {{{name}}} may have a format (after ':') but no "
                  "!conversion or nested fields")
        fields.append((name, spec or ""))
    return fields


def _format_field(name: str, value: Any, spec: str) -> str:
    """One field's text: strftime for time values when the spec has %, else format()."""
    if spec and "%" in spec:
        when = value if isinstance(value, datetime) else parse_calendar(str(value))[0]
        text = when.strftime(spec)
    elif spec:
        if isinstance(value, str):
            value = _number_or_text(value)
        try:
            text = format(value, spec)
        except (TypeError, ValueError):
            _fail(f"path_template field {{{name}:{spec}}}: cannot format {value!r} with {spec!r}")
    else:
        text = value.strftime("%Y%m%d_%H%M%S") if isinstance(value, datetime) else str(value)
    return text.replace("/", "_").replace("\\", "_") if not (spec and "%" in spec) else text


def _number_or_text(value: str) -> int | float | str:
    for kind in (int, float):
        with contextlib.suppress(ValueError):
            return kind(value)
    return value


def _check_components(path: str, template: str) -> None:
    if path.startswith(("/", "\\", "~")) or re.match(r"[A-Za-z]:", path) or "\\" in path:
        _fail(f"path_template {template!r} must be a relative path inside the data directory "
              "(no leading /, ~, drive letter or backslash)")
    for part in path.split("/"):
        if part in ("", ".", ".."):
            _fail(f"path_template {template!r} gives the path {path!r} with an empty, '.' or "
                  "'..' component; every component must name a directory or file inside the data "
                  "directory")
        problem = name_problem(part)
        if problem:
            _fail(f"path_template {template!r} gives the path {path!r}, whose component "
                  f"{part!r} {problem}; file and directory names must be printable text")
        if len(part.encode()) > MAX_PATH_COMPONENT_BYTES:
            _fail(f"path_template {template!r} gives the path component {part[:40]!r}… of "
                  f"{len(part.encode())} bytes; at most {MAX_PATH_COMPONENT_BYTES} bytes per "
                  "file or directory name")


def render_path(template: str, values: Mapping[str, Any]) -> str:
    """Render a path template with a record's values (looked up case-insensitively).

    Time values may be datetimes or JSOC/ISO strings; with a ``%`` format they are formatted as
    written (a TAI string on the TAI calendar). '/' inside a value becomes '_'.
    """
    folded = {k.upper(): v for k, v in values.items()}
    out = []
    for literal, name, spec, _conv in string.Formatter().parse(template):
        out.append(literal)
        if name is None:
            continue
        if name not in values and name.upper() not in folded:
            _fail(f"path_template field {{{name}}} has no value for this file; known: "
                  f"{', '.join(sorted(values))}")
        value = values[name] if name in values else folded[name.upper()]
        text = _format_field(name, value, spec or "")
        if not text.strip():
            _fail(f"path_template field {{{name}}} is empty for this file; a path component "
                  "cannot be empty")
        out.append(text)
    path = "".join(out)
    _check_components(path, template)
    return path


def check_template_shape(template: str) -> list[tuple[str, str]]:
    """Reject templates that are malformed or could leave the data directory; return the fields."""
    if not template.strip():
        _fail("path_template is empty; use e.g. {series}/{filename}")
    fields = template_fields(template)
    sample: dict[str, datetime | str | int] = {
        name: (_SAMPLE_TIME if "%" in spec else "x") for name, spec in fields}
    for name, spec in fields:
        if spec and "%" not in spec:
            try:
                format("x", spec)
            except ValueError:
                sample[name] = 1
    _check_components(render_path(template, sample), template)
    return fields
