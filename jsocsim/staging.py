"""How long a full export takes to stage, and the site-wide staging queue.

What JSOC shows of it: docs/jsoc-protocol.md §3.10 and §7.13.

An export's *work* is ``staging_delay + staging_per_record * records + staging_per_mb * MB``
(plus ``tape_delay`` for offline data in tape mode). At most ``staging_slots`` exports work at
once (0 = no limit); the others wait in submission order. The schedule is decided when a request
arrives, on the simulated clock, so `advance_clock` moves through it without waiting:

    submitted -- queued (2) --> slot start -- pickup (2) --> picked up -- processing (1) --> 0
                                |  <- staging_delay / 2 ->   |     <- rest of the work ->    |

With no costs and no slot limit this is the emulator's original model: half of
``staging_delay`` in status 2, half in status 1.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from jsocsim.config import EmulatorConfig


@dataclass(frozen=True)
class StagingSlot:
    """When an export gets a slot, is picked up (2 -> 1) and is ready (1 -> 0), TAI seconds."""

    start: float
    picked_up: float
    ready_at: float

    @property
    def work(self) -> float:
        """Seconds the export holds its slot."""
        return self.ready_at - self.start


def work_seconds(config: EmulatorConfig, records: int, size_mb: int, tape: bool = False) -> float:
    """Staging time of one export once it has a slot."""
    work = (config.staging_delay + config.staging_per_record * records
            + config.staging_per_mb * size_mb)
    return work + (config.tape_delay if tape else 0.0)


def slot_start(now: float, busy_until: Iterable[float], slots: int) -> float:
    """Earliest time >= `now` at which fewer than `slots` scheduled exports are still working.

    `busy_until` holds the end times of exports already scheduled (any order). Every earlier
    export keeps its place, so a new one waits for the `slots`-th latest end: first come,
    first served. `slots` 0 means no limit.
    """
    if slots <= 0:
        return now
    ends = sorted((end for end in busy_until if end > now), reverse=True)
    if len(ends) < slots:
        return now
    return ends[slots - 1]


def schedule(config: EmulatorConfig, now: float, busy_until: Iterable[float], records: int,
             size_mb: int, tape: bool = False) -> StagingSlot:
    """The slot of a new export submitted at `now`, given the exports already scheduled."""
    start = slot_start(now, busy_until, config.staging_slots)
    work = work_seconds(config, records, size_mb, tape)
    return StagingSlot(start=start, picked_up=start + config.staging_delay / 2,
                       ready_at=start + work)
