"""Slot-aligned chunks of a job, lazily, and halving one on a slot boundary.

Internally a job is the half-open range of its sampled slots (``timeline.job_slots``), and
chunks are ``start/duration[@cadence]`` pieces of it: chunk ``seq`` covers sampled slots
``[seq·n, (seq+1)·n)``, so any chunk is computed in O(1), planning a year of 12 s data never
builds the whole list, and no slot is in two chunks. The same job always gives the same
chunks; ``split_chunk`` halves one on a slot boundary (JSOC status 3).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict

from service.jobspec import JobSpec, SpecError
from service.jsoc.metadata import SeriesMeta
from service.planning.recordsets import recordset_template, time_group
from service.planning.timeline import SlotGrid, by_value_end, job_slots, slot_grid
from service.timeutil import format_tai, parse_time

DEFAULT_MAX_RECORDS = 5_000
END_MARGIN = 0.001  # s past a by-value job's end that its last chunk covers (its end included)
DEFAULT_MAX_BYTES = 20_000 * 2**20  # 20,000 MB, well under JSOC's 100,000 MB export limit


class ChunkSplitError(ValueError):
    """A chunk that cannot be halved (one slot, or a raw recordset without a time range)."""


class ChunkPlan(BaseModel):
    """One export's worth of records. ``part`` names split halves ("0", "1", "01", …)."""

    model_config = ConfigDict(frozen=True)
    seq: int
    part: str = ""
    recordset: str
    start: str | None  # JSOC TAI string of the first slot (None for an unsplittable recordset)
    duration: float | None  # seconds covered, first slot to just after the last sampled one
    est_records: int
    est_bytes: int
    # What split_chunk needs to rebuild halves:
    first_slot: int = 0
    slot_count: int = 0  # sampled slots in this chunk
    stride: int = 1
    grid: tuple[float, float, float | None] | None = None  # (epoch, step, round_)
    cadence: float | None = None
    prefix: str = ""
    suffix: str = ""
    records_per_slot: float = 1.0
    bytes_per_record: int = 0
    until: float | None = None  # a time key without slots: the job's end (TAI), included

    def slots(self) -> range:
        """The slot indices this chunk selects."""
        return range(self.first_slot, self.first_slot + self.slot_count * self.stride, self.stride)


def _make_chunk(
    base: dict[str, Any], grid: SlotGrid, first: int, count: int, stride: int
) -> ChunkPlan:
    """A chunk of ``count`` sampled slots starting at slot ``first``."""
    span = ((count - 1) * stride + 1) * grid.step
    start_tai = grid.time(first)
    if base.get("until") is not None:  # by value: stop just after the job's end, not a step on
        span = round(min(span, base["until"] - start_tai + END_MARGIN), 3)
    records = math.ceil(count * base["records_per_slot"] - 1e-9)
    group = time_group(start_tai, span, base["cadence"])
    return ChunkPlan(
        **base, recordset=f"{base['prefix']}{group}{base['suffix']}", start=format_tai(start_tai),
        duration=span, est_records=records, est_bytes=records * base["bytes_per_record"],
        first_slot=first, slot_count=count, stride=stride,
        grid=(grid.epoch, grid.step, grid.round_),
    )


def multiplicity(spec: JobSpec, meta: SeriesMeta) -> int:
    """Records per slot implied by the spec: product of the listed values of other prime keys."""
    given: dict[str, Any] = {k.upper(): v for k, v in spec.prime_keys.items()}
    if spec.wavelengths:
        given["WAVELNTH"] = spec.wavelengths
    count = 1
    for key in meta.primekeys:
        value = given.get(key.name.upper())
        if not key.is_time and isinstance(value, list):
            count *= len(value)
    return count


def chunk_slot_count(records_per_slot: float, bytes_per_record: int, max_records: int,
                     max_bytes: int) -> int:
    """Sampled slots per chunk so that records and estimated bytes stay under the limits."""
    by_records = max_records / records_per_slot if records_per_slot > 0 else math.inf
    per_slot_bytes = records_per_slot * bytes_per_record
    by_bytes = max_bytes / per_slot_bytes if per_slot_bytes > 0 else math.inf
    limit = min(by_records, by_bytes)
    return max(1, math.floor(limit)) if math.isfinite(limit) else 2**62


def chunks_over(
    spec: JobSpec, meta: SeriesMeta, slots: range, *, first_seq: int = 0,
    max_records: int = DEFAULT_MAX_RECORDS, max_bytes: int = DEFAULT_MAX_BYTES,
    bytes_per_record: int = 0, records_per_slot: float | None = None,
) -> Iterator[ChunkPlan]:
    """Chunks of the sampled ``slots`` (a half-open piece of the job's range), lazily; the
    first one gets seq ``first_seq``."""
    time_key = meta.time_key()
    if time_key is None or spec.start_tai is None:
        raise SpecError(["planning needs a time prime key and start"])
    grid = slot_grid(meta, time_key, spec.start_tai)
    rps = float(records_per_slot or multiplicity(spec, meta))  # a sample of 0 proves nothing
    template = recordset_template(spec, meta)
    per_chunk = chunk_slot_count(rps, bytes_per_record, max_records, max_bytes)
    base = dict(prefix=template.prefix, suffix=template.suffix, cadence=spec.cadence_seconds,
                records_per_slot=rps, bytes_per_record=bytes_per_record,
                until=by_value_end(spec, time_key))
    for i in range(math.ceil(len(slots) / per_chunk)):
        sampled = slots[i * per_chunk:(i + 1) * per_chunk]
        yield _make_chunk({**base, "seq": first_seq + i}, grid, sampled.start, len(sampled),
                          slots.step)


def plan_chunks(
    spec: JobSpec, meta: SeriesMeta, *, max_records: int = DEFAULT_MAX_RECORDS,
    max_bytes: int = DEFAULT_MAX_BYTES, bytes_per_record: int = 0,
    start_after: int | None = None, records_per_slot: float | None = None,
    until: str | float | None = None,
) -> Iterator[ChunkPlan]:
    """Yield the job's chunks in order, lazily, each under ``max_records`` and ``max_bytes``.

    ``records_per_slot`` (e.g. rs_summary of a sample / its slots) overrides the count implied
    by the spec unless it is 0; for a time key without slots it means records per second.
    ``start_after`` is the last seq already stored: planning resumes after it. ``until`` (TAI
    seconds or a time string, excluded) ends a follow job's range. A recordset job is one chunk.
    """
    if spec.recordset is not None:
        if start_after is None or start_after < 0:
            yield ChunkPlan(seq=0, recordset=spec.recordset, start=None, duration=None,
                            est_records=0, est_bytes=0, bytes_per_record=bytes_per_record)
        return
    whole = job_slots(spec, meta, parse_time(until) if isinstance(until, str) else until)
    skip = (start_after + 1) if start_after is not None else 0
    per_chunk = chunk_slot_count(float(records_per_slot or multiplicity(spec, meta)),
                                 bytes_per_record, max_records, max_bytes)
    yield from chunks_over(spec, meta, whole[skip * per_chunk:], first_seq=skip,
                           max_records=max_records, max_bytes=max_bytes,
                           bytes_per_record=bytes_per_record, records_per_slot=records_per_slot)


def sample_recordset(spec: JobSpec, meta: SeriesMeta, slots: int = 10) -> tuple[str, int]:
    """A recordset of the job's first ``slots`` sampled slots, and how many slots it has.

    The caller counts it with rs_summary to get ``records_per_slot`` for ``plan_chunks``.
    """
    first = next(plan_chunks(spec, meta, max_records=slots, records_per_slot=1.0), None)
    if first is None:
        raise SpecError(["the job's time range is empty"])
    return first.recordset, first.slot_count


def split_chunk(chunk: ChunkPlan) -> tuple[ChunkPlan, ChunkPlan]:
    """Halve a chunk on a slot boundary; the halves' parts are ``part+"0"`` and ``part+"1"``."""
    if chunk.grid is None:
        raise ChunkSplitError(
            f"chunk {chunk.seq}{chunk.part} is the raw recordset {chunk.recordset!r}; it has no "
            "planned time range, so it cannot be split")
    if chunk.slot_count < 2:
        raise ChunkSplitError(
            f"chunk {chunk.seq}{chunk.part} ({chunk.recordset}) covers one time slot and cannot "
            "be split further; ask for fewer segments or prime-key values per job")
    grid = SlotGrid(*chunk.grid)
    base = chunk.model_dump(include={"seq", "prefix", "suffix", "cadence", "records_per_slot",
                                     "bytes_per_record", "until"})
    half = chunk.slot_count // 2
    first = _make_chunk({**base, "part": chunk.part + "0"}, grid, chunk.first_slot, half,
                        chunk.stride)
    second = _make_chunk({**base, "part": chunk.part + "1"}, grid,
                         chunk.first_slot + half * chunk.stride, chunk.slot_count - half,
                         chunk.stride)
    return first, second
