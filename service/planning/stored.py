"""Chunks as the database takes and gives them back.

``NewChunk`` is a chunk to insert (``Repo.add_chunks``, or a half for ``Repo.split_chunk``);
from a ``StoredChunk`` (what a stored chunk says about itself, as the repository gives it back:
``service/db/repo_base.py``) ``stored_chunk_plan`` rebuilds the ``ChunkPlan`` that
``split_chunk`` halves (JSOC status 3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from service.db.repo_base import StoredChunk
from service.jobspec import JobSpec
from service.jsoc.metadata import SeriesMeta
from service.planning.chunks import ChunkPlan, multiplicity, split_chunk
from service.planning.recordsets import recordset_template
from service.planning.timeline import by_value_end, timeline
from service.timeutil import format_tai, parse_time


@dataclass(frozen=True)
class NewChunk:
    """A chunk to store: its record set, time range (end excluded) and estimates. ``seq`` is
    None for the halves of a split (they keep their parent's)."""

    recordset: str
    start_time: str | None
    end_time: str | None
    est_records: int
    est_bytes: int
    seq: int | None = None

    def numbered(self, seq: int) -> NewChunk:
        return replace(self, seq=seq)

    def row(self) -> dict[str, Any]:
        """The chunk as ``add_chunks`` (with its seq) or ``split_chunk`` (without) take it."""
        row: dict[str, Any] = {
            "recordset": self.recordset, "start_time": self.start_time,
            "end_time": self.end_time, "est_records": self.est_records,
            "est_bytes": self.est_bytes}
        return row if self.seq is None else {"seq": self.seq, **row}


def new_chunk(chunk: ChunkPlan, seq: int | None = None) -> NewChunk:
    """A planned chunk to store (end_time = start + duration)."""
    end = None
    if chunk.start is not None and chunk.duration is not None:
        end = format_tai(parse_time(chunk.start) + chunk.duration)
    return NewChunk(chunk.recordset, chunk.start, end, chunk.est_records, chunk.est_bytes, seq)


def split_children(plan: ChunkPlan) -> list[NewChunk]:
    """The two halves of a chunk JSOC called too large (ChunkSplitError if it has none)."""
    return [new_chunk(half) for half in split_chunk(plan)]


def stored_chunk_plan(spec: JobSpec, meta: SeriesMeta, chunk: StoredChunk) -> ChunkPlan:
    """Rebuild the ChunkPlan of a stored chunk (what ``split_chunk`` needs)."""
    key = meta.time_key()
    est_bytes = chunk.est_bytes or 0
    if spec.recordset is not None or key is None or spec.start_tai is None \
            or chunk.start_time is None or chunk.end_time is None:
        return ChunkPlan(seq=chunk.seq, part=chunk.part, recordset=chunk.recordset,
                         start=chunk.start_time, duration=None, est_records=0,
                         est_bytes=est_bytes)
    tl = timeline(spec, meta)
    start = parse_time(chunk.start_time)
    span = parse_time(chunk.end_time) - start
    until = by_value_end(spec, key)
    count = max(1, math.ceil(span / tl.grid.step - 1e-6) if until is not None
                else round((span / tl.grid.step - 1) / tl.stride) + 1)
    template = recordset_template(spec, meta)
    rps = float(multiplicity(spec, meta))
    records = max(1, round(count * rps))
    return ChunkPlan(
        seq=chunk.seq, part=chunk.part, recordset=chunk.recordset, start=chunk.start_time,
        duration=span, est_records=records, est_bytes=est_bytes,
        first_slot=tl.index(start), slot_count=count, stride=tl.stride,
        grid=(tl.grid.epoch, tl.grid.step, tl.grid.round_), cadence=spec.cadence_seconds,
        prefix=template.prefix, suffix=template.suffix, records_per_slot=rps,
        bytes_per_record=est_bytes // records, until=until)
