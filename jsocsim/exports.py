"""The export state machine: requests, limits, duplicates, expiry.

JSOC's rules are in docs/jsoc-protocol.md §3.8-§3.10 and §5.1.
`ExportManager.request()` runs jsoc_fetch's exp_request pipeline in JSOC's order: address
check -> pending limits -> parse -> quality filter -> open records (n limit) -> duplicate ->
survey -> size -> quick path / full export. A full export moves 2 -> 1 -> 0 on the SimState
clock as staging.py schedules it (queue for a site-wide slot, then a base delay plus costs per
record and per MB); its files are written in a worker thread meanwhile and it reports 0 only
once they are on disk. `status()` answers exp_status. Faults: failing,
stuck and early-expiring exports, status 6 for the first polls, offline storage units.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from jsocsim.cgi_fetch import ExportRequestError, RequestParams, build_plan
from jsocsim.cgi_info import check_address
from jsocsim.staging import schedule
from jsocsim.state import SimState
from jsocsim.store import ExportPlan, write_export_dir
from jsocsim.timeslots import format_time

log = logging.getLogger(__name__)
REQUEST_ID_RE = re.compile(r"JSOC_[0-9]{8}_[0-9]+(_IN)?")
CONTACT = "jsoc_help@jsoc.stanford.edu"
FINAL_WAIT = 999999
STATUS_TEXT = {3: "Request too large", 4: "RecordSet specified does not exist",
               5: "Request was completed but is now deleted, 7 day limit exceeded"}
STATUS6_TEXT = "RequestID not recognized, probably need to repeat in a few seconds"


@dataclass
class Export:
    """One export request (a row of jsoc.export plus what the emulator needs to stage it)."""

    requestid: str
    email: str
    client_ip: str
    plan: ExportPlan
    submitted: float
    picked_up: float  # 2 -> 1: got a staging slot and the export manager took it
    ready_at: float  # 1 -> 0 (once the files are on disk)
    stored_status: int | None = None  # 4 failed / 25 intervention: fixed outcomes
    error: str = ""
    stuck: bool = False
    fail: bool = False
    dir: str = ""
    index: dict[str, Any] | None = None
    staged: bool = False
    deleted: bool = False
    polls: int = 0
    task: asyncio.Future[None] | None = field(default=None, repr=False)


def _wait_hint(seconds: float) -> int:
    """`wait` as JSOC prints it: whole seconds, negative when the estimate has passed."""
    return math.ceil(round(seconds, 6))  # no 52 for 51.000000001 s of clock arithmetic


class ExportManager:
    """All export requests of one emulator."""

    def __init__(self, state: SimState) -> None:
        self.state = state
        self.exports: dict[str, Export] = {}
        self._daily: dict[str, int] = {}
        self._lock = asyncio.Lock()
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="jsocsim-stage")
        state.store.before_locate = self.sweep_expired

    # ---- clock-driven status -------------------------------------------------------------
    def now(self) -> float:
        return self.state.clock()

    def expire_after(self) -> float:
        fault = self.state.faults.config.export_expire_after
        return float(fault) if fault is not None else self.state.config.export_expiry

    def current_status(self, export: Export, now: float | None = None) -> int:
        """The export's status at `now` (2, 1, 0, 4, 5 or 25); deletes expired directories."""
        now = self.now() if now is None else now
        if export.stored_status is not None:
            return export.stored_status
        if export.deleted:
            return 5
        if now < export.picked_up:
            return 2
        if export.stuck or now < export.ready_at:
            return 1
        if export.fail:
            export.stored_status = 4
            export.error = (f"Export of {export.requestid} failed: the export script returned "
                            "an error (simulated export_fail_rate fault)")
            return 4
        if not export.staged:
            return 1  # late: the files are still being written
        if now >= export.ready_at + self.expire_after():
            self._delete(export)
            return 5
        return 0

    def sweep_expired(self) -> None:
        """Delete the directories of every export past its expiry (before serving files)."""
        now = self.now()
        for export in self.exports.values():
            if export.staged and not export.deleted and export.stored_status is None:
                self.current_status(export, now)

    def _delete(self, export: Export) -> None:
        export.deleted = True
        if export.dir:
            self.state.store.remove_export_dir(export.dir)

    def is_pending(self, export: Export, now: float) -> bool:
        """Counts toward the status-7 limits: pending and younger than pending_timeout."""
        if now - export.submitted >= self.state.config.pending_timeout:
            return False
        return self.current_status(export, now) in (1, 2)

    def pending_of(self, now: float, email: str | None = None,
                   ip: str | None = None) -> list[Export]:
        """Pending exports of an email (case-insensitive) or of a client IP."""
        return [e for e in self.exports.values()
                if (email is None or e.email.lower() == email.lower())
                and (ip is None or e.client_ip == ip) and self.is_pending(e, now)]

    def _note_pending(self, email: str, ip: str, now: float) -> None:
        self.state.stats.pending_changed(email, ip, len(self.pending_of(now, email=email)),
                                         len(self.pending_of(now, ip=ip)))

    # ---- exp_request ---------------------------------------------------------------------
    async def request(self, params: dict[str, str], client_ip: str) -> dict[str, Any]:
        """exp_request: the reply dict (status 0, 2, 3, 4, 7 or 25)."""
        async with self._lock:
            email = (params.get("notify") or "").strip()
            reply = await self._request_locked(params, email, client_ip)
        self.state.stats.exp_request(email or "(none)", client_ip, int(reply["status"]),
                                     reply.get("requestid") or None)
        if email:
            self._note_pending(email, client_ip, self.now())
        return reply

    async def _request_locked(self, params: dict[str, str], email: str,
                              client_ip: str) -> dict[str, Any]:
        if not email:
            return {"status": 4, "error": "Email address for notification was not specfied. "
                                          "Please give a registered address in notify=."}
        checked = check_address(self.state, email, checkonly=True)
        if checked["status"] != 2:
            return {"status": 4, "error": f"Cannot process your request. {checked['msg']}"}
        now = self.now()
        refusal = self._pending_refusal(email, client_ip, now)
        if refusal is not None:
            return refusal
        try:
            request = RequestParams.parse(params)
            plan = await asyncio.to_thread(build_plan, self.state, request)
        except ExportRequestError as exc:
            return {"status": exc.status, "error": str(exc)}
        duplicate = self._duplicate_of(plan, now)
        if duplicate is not None:
            return self._duplicate_reply(duplicate, now)
        too_large = plan.size_refusal()
        if too_large is not None:
            return too_large
        if plan.quick and not plan.offline:
            return plan.quick_reply()
        return self._start_export(plan, email, client_ip, now)

    def _pending_refusal(self, email: str, ip: str, now: float) -> dict[str, Any] | None:
        mine = self.pending_of(now, email=email)
        if len(mine) >= self.state.config.pending_per_email:
            ids = ",".join(e.requestid for e in mine)
            self.state.stats.violation(
                "second_pending_export", email,
                f"exp_request while {len(mine)} export(s) pending ({ids})")
            return {"status": 7, "error": f"User {email} has {len(mine)} pending export requests "
                                          f"({ids}); please wait until at least one request has "
                                          "completed before submitting a new one."}
        from_ip = self.pending_of(now, ip=ip)
        if len(from_ip) >= self.state.config.pending_per_ip:
            self.state.stats.violation(
                "ip_pending_limit", ip, f"exp_request while {len(from_ip)} exports pending")
            return {"status": 7, "error": f"There are too many requests from {email}; the client "
                                          f"{ip} has {len(from_ip)} pending export requests. "
                                          "Please wait until some have completed."}
        return None

    def _duplicate_of(self, plan: ExportPlan, now: float) -> Export | None:
        """The newest export with the same hash inside the window whose files still exist."""
        window = self.state.config.dup_window
        for export in sorted(self.exports.values(), key=lambda e: e.submitted, reverse=True):
            if export.plan.digest != plan.digest or now - export.submitted >= window:
                continue
            if self.current_status(export, now) in (0, 1, 2):
                return export
        return None

    def _duplicate_reply(self, export: Export, now: float) -> dict[str, Any]:
        return {"status": 2, "requestid": export.requestid, "method": export.plan.method,
                "protocol": export.plan.protocol,
                "wait": max(0, _wait_hint(export.ready_at - now)),
                "rcount": export.plan.rcount, "size": export.plan.size_mb}

    def new_request_id(self) -> str:
        """JSOC_YYYYMMDD_NNN from a daily counter (date of the simulated clock, UTC)."""
        day = self.state.clock.utc_datetime().strftime("%Y%m%d")
        self._daily[day] = self._daily.get(day, 0) + 1
        return f"JSOC_{day}_{self._daily[day]:03d}"

    def _start_export(self, plan: ExportPlan, email: str, ip: str, now: float) -> dict[str, Any]:
        requestid = self.new_request_id()
        config, faults = self.state.config, self.state.faults
        if plan.offline and config.offline_mode == "status25":
            self.exports[requestid] = Export(requestid=requestid, email=email, client_ip=ip,
                                             plan=plan, submitted=now, picked_up=now,
                                             ready_at=now, stored_status=25)
            return {"status": 25, "requestid": requestid, "error": (
                "One or more data files are offline; please send a request for help to "
                "jsoc@sun.stanford.edu and we will place the requested data online, and then "
                f"you may try again; {requestid}")}
        slot = schedule(config, now, self._busy_until(), plan.rcount, plan.size_mb,
                        tape=plan.offline and config.offline_mode == "tape")
        export = Export(requestid=requestid, email=email, client_ip=ip, plan=plan,
                        submitted=now, picked_up=slot.picked_up, ready_at=slot.ready_at)
        self.exports[requestid] = export
        export.stuck = faults.roll("export_stuck", requestid)
        export.fail = not export.stuck and faults.roll("export_fail", requestid)
        if not export.fail:
            export.task = self._stage_later(export)
        return {"status": 2, "requestid": requestid, "method": plan.method,
                "protocol": plan.protocol, "wait": _wait_hint(export.ready_at - now),
                "rcount": plan.rcount, "size": plan.size_mb}

    def _busy_until(self) -> list[float]:
        """End times of the exports holding or waiting for a staging slot (not status 25)."""
        return [e.ready_at for e in self.exports.values() if e.stored_status != 25]

    def _stage_later(self, export: Export) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        exptime = format_time(export.ready_at, "utc")[:-1]  # ..._UT as JSOC writes it
        future = loop.run_in_executor(self._executor, self._stage, export, exptime)
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        return future

    def _stage(self, export: Export, exptime: str) -> None:
        """Worker thread: write the export directory; a failure becomes status 4."""
        store = self.state.store
        try:
            export.dir, export.index = write_export_dir(store, export.plan, export.requestid,
                                                        exptime)
        except Exception as exc:  # reported to the client as a failed export
            log.exception("staging %s failed", export.requestid)
            export.error = f"Export of {export.requestid} failed while writing files: {exc}"
            export.stored_status = 4
            return
        export.staged = True
        try:
            store.fill_export_dir(export.dir)
        except Exception:  # the files are rendered again when first requested
            log.exception("pre-rendering files of %s failed", export.requestid)

    # ---- exp_status ----------------------------------------------------------------------
    def status(self, requestid: str | None) -> dict[str, Any]:
        """exp_status reply for `requestid` (index.json contents once finished)."""
        if not requestid:
            return {"status": 4, "error": "RequestID must be provided"}
        if not REQUEST_ID_RE.match(requestid):
            return {"status": 4, "error": f"Bad RequestID '{requestid}' provided."}
        export = self.exports.get(requestid)
        if export is None:
            return {"status": 4, "error": f"invalid export DRMS record for ID {requestid}"}
        export.polls += 1
        reply = self._status_reply(export)
        self.state.stats.export_status(requestid, int(reply["status"]))
        self._note_pending(export.email, export.client_ip, self.now())
        return reply

    def _status_reply(self, export: Export) -> dict[str, Any]:
        now = self.now()
        if export.polls <= self.state.faults.config.status6_polls:
            return {"status": 6, "requestid": export.requestid, "wait": 1,
                    "error": STATUS6_TEXT}
        status = self.current_status(export, now)
        if status == 0 and export.index is not None:
            return dict(export.index)
        if status == 25:
            return {"status": 4, "requestid": export.requestid, "error":
                    "Illegal status in export record", "contact": CONTACT}
        reply: dict[str, Any] = {
            "status": status, "requestid": export.requestid, "method": export.plan.method,
            "protocol": export.plan.protocol,
            "wait": FINAL_WAIT if status in (3, 4, 5) else _wait_hint(export.ready_at - now),
            "rcount": 0, "size": export.plan.size_mb}
        if status in (3, 4, 5):
            reply["error"] = export.error if status == 4 and export.error else STATUS_TEXT[status]
        if status > 2:
            reply["contact"] = CONTACT
        return reply

    # ---- lifecycle -----------------------------------------------------------------------
    async def close(self) -> None:
        """Drop queued staging work and wait for the threads that are writing files."""
        for export in self.exports.values():
            if export.task is not None and not export.task.done():
                export.task.cancel()
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)

