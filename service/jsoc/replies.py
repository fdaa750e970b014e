"""The shapes of JSOC's JSON replies, checked before anything is read from them.

The replies are described in docs/jsoc-protocol.md §3 and §4.2.

A reply that does not fit (a wrong type, a missing file list, text that is not storable) raises
``JsocMalformedReply``: a transient error, retried with backoff and shown on the job, never
read as a success. Numbers may come as JSON strings ("status":"0"), as JSOC sends them.
File names in an export's ``data`` rows are checked one by one later (``file_name_problem``),
so one bad name fails only its file.
"""

from __future__ import annotations

import math
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from service.download.paths import UnsafePathError, check_filename
from service.jsoc.status import JsocMalformedReply
from service.safetext import name_problem, text_problem

M = TypeVar("M", bound=BaseModel)


class _Reply(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


def _storable(value: str | None) -> str | None:
    problem = None if value is None else text_problem(value)
    if problem:
        raise ValueError(f"text {problem}")
    return value


def _null_as_empty(value: Any) -> Any:
    """JSON null in a text field reads as ""."""
    return "" if value is None else value


def json_number(v: Any) -> Any:
    """JSOC's numbers, also as strings ("0", "3.5"); other text fails validation."""
    if isinstance(v, bool):
        raise ValueError("a boolean where a number belongs")
    if isinstance(v, str) and v.strip():
        v = float(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError("not a finite number")
        return int(v) if v.is_integer() else v
    return None if v == "" else v


class DataRowModel(_Reply):
    """One ``data`` row: record spec and file name (checked per file, not here)."""

    record: str = ""
    filename: str = ""

    @field_validator("record", "filename", mode="before")
    @classmethod
    def _blank(cls, v: Any) -> Any:
        return _null_as_empty(v)


class ExportReplyModel(_Reply):
    """exp_request / exp_status / index.json."""

    status: int
    requestid: str | None = None
    reqid: str | None = None
    wait: float | None = None
    size: float | None = None
    count: int | None = None
    rcount: int | None = None
    method: str = ""
    protocol: str = ""
    dir: str = ""
    data: list[DataRowModel] | None = None
    tarfile: str | None = None
    error: str | None = None
    errmsg: str | None = None

    @field_validator("wait", "size", "count", "rcount", "status", mode="before")
    @classmethod
    def _numbers(cls, v: Any) -> Any:
        return json_number(v)

    @field_validator("requestid", "reqid", mode="before")
    @classmethod
    def _request_id(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("method", "protocol", "dir", mode="before")
    @classmethod
    def _text(cls, v: Any) -> Any:
        return _null_as_empty(v)

    @field_validator("requestid", "reqid", "method", "protocol", "dir", "tarfile", "error",
                     "errmsg")
    @classmethod
    def _clean(cls, v: str | None) -> str | None:
        return _storable(v)

    def done_problem(self) -> str | None:
        """A finished export (status 0) must list its files."""
        if self.status == 0 and self.data is None:
            return "status 0 (done) without a data list of files"
        return None


class InfoStatusModel(_Reply):
    """The status every jsoc_info reply carries (0 = success; absent means success)."""

    status: int = 0

    @field_validator("status", mode="before")
    @classmethod
    def _number(cls, v: Any) -> Any:
        return json_number(v)


class _Named(_Reply):
    name: str

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        problem = name_problem(v)
        if problem:
            raise ValueError(f"name {problem}")
        return v


class KeywordModel(_Named):
    type: str = ""
    units: str | None = None
    note: str | None = None
    defval: str | int | float | None = None


class SegmentModel(_Named):
    protocol: str | None = None
    dims: str | None = None
    units: str | None = None
    note: str | None = None


class IntervalModel(_Reply):
    FirstRecord: str | int | None = None
    LastRecord: str | int | None = None


class SeriesStructModel(_Reply):
    """jsoc_info op=series_struct."""

    note: str | None = None
    primekeys: list[str | None] = Field(default_factory=list)
    primekeysinfo: list[dict[str, Any] | None] = Field(default_factory=list)
    keywords: list[KeywordModel] = Field(default_factory=list)
    segments: list[SegmentModel] = Field(default_factory=list)
    links: list[_Named] = Field(default_factory=list)
    Interval: IntervalModel | None = None

    @field_validator("primekeys")
    @classmethod
    def _keys(cls, v: list[str | None]) -> list[str | None]:
        for name in v:
            problem = None if name is None else name_problem(name)
            if problem:
                raise ValueError(f"prime key name {problem}")
        return v


class RsSummaryModel(_Reply):
    """jsoc_info op=rs_summary."""

    count: int


class ColumnModel(_Reply):
    name: str
    values: list[Any] = Field(default_factory=list)


class RecInfoModel(_Reply):
    name: str


class RsListModel(_Reply):
    """jsoc_info op=rs_list."""

    count: int | None = None
    keywords: list[ColumnModel] = Field(default_factory=list)
    segments: list[ColumnModel] = Field(default_factory=list)
    links: list[ColumnModel] = Field(default_factory=list)
    recinfo: list[RecInfoModel] = Field(default_factory=list)


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    parts = [f"{'.'.join(str(p) for p in e['loc']) or 'reply'}: {e['msg']}" for e in errors[:3]]
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return "; ".join(parts) + more


def checked(model: type[M], payload: dict[str, Any], what: str) -> M:
    """``payload`` as ``model``; JsocMalformedReply naming what does not fit."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise JsocMalformedReply(f"JSOC sent a malformed {what} reply: {_first_error(exc)}",
                                 reply=payload) from None


def export_reply(payload: dict[str, Any], what: str) -> ExportReplyModel:
    """A jsoc_fetch reply, checked (also that a finished export lists its files)."""
    model = checked(ExportReplyModel, payload, what)
    problem = model.done_problem()
    if problem:
        raise JsocMalformedReply(f"JSOC sent a malformed {what} reply: {problem}", reply=payload)
    return model


def file_name_problem(filename: str, record: str, *, path_ok: bool) -> str | None:
    """Why a ``data`` row's file cannot be fetched and stored, or None. ``path_ok``: the name
    may be a server path (url_quick), of which only the last component names the local file."""
    problem = name_problem(record) or name_problem(filename)
    if problem:
        return f"JSOC listed a file name or record that {problem}"
    name = filename.rsplit("/", 1)[-1] if path_ok and filename.startswith("/") else filename
    try:
        check_filename(name)
    except UnsafePathError as exc:
        return f"JSOC listed a file name that cannot be stored: {exc}"
    if path_ok and ".." in filename.split("/"):
        return f"JSOC listed the server path {filename!r} with a '..' component"
    return None
