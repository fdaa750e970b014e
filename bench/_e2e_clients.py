"""drms and sunpy as child processes of `bench.e2e`, so their CPU is theirs alone.

`python -m bench._e2e_clients drms|sunpy JSON` runs one timed fetch and prints one line
`RESULT {"seconds": ..., "cpu": ..., "error": ...}`. The JSON argument holds the emulator's
URL, the email, the record set, method and protocol, the output directory and (sunpy) the
search attributes. Only the fetch is timed (drms: export + wait + download; sunpy: fetch, whose
search ran before); CPU is this process's user + system time over the same span.

drms and sunpy are pointed at the emulator as tests/emulator do it: a `drms.ServerConfig` whose
URLs are the emulator's, passed to drms.Client, and put in place of drms's "jsoc" entry for
sunpy (which has no server option).
"""

from __future__ import annotations

import functools
import json
import resource
import sys
import time
from collections.abc import Callable
from typing import Any


def server_config(base_url: str, name: str = "jsocsim") -> Any:
    import drms

    return drms.ServerConfig(
        name=name, cgi_baseurl=base_url + "cgi-bin/ajax/", cgi_show_series="show_series",
        cgi_jsoc_info="jsoc_info", cgi_jsoc_fetch="jsoc_fetch",
        cgi_check_address="checkAddress.sh", http_download_baseurl=base_url, encoding="latin1",
        cgi_show_series_wrapper="showextseries", show_series_wrapper_dbhost="hmidb2")


def set_drms_poll(seconds: float) -> None:
    """drms.ExportRequest.wait polls every `seconds` (drms's default: 5)."""
    import drms

    if seconds != 5:
        drms.ExportRequest.wait = functools.partialmethod(  # type: ignore[method-assign]
            drms.ExportRequest.wait, sleep=seconds)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(fetch: Callable[[], str]) -> dict[str, Any]:
    """Run `fetch` (returns an error text or ""), timing wall clock and CPU."""
    cpu0, t0 = _cpu(), time.perf_counter()
    error = fetch()
    return {"seconds": time.perf_counter() - t0, "cpu": _cpu() - cpu0, "error": error}


def run_drms(job: dict[str, Any]) -> dict[str, Any]:
    import drms

    set_drms_poll(job["drms_poll"])
    client = drms.Client(server_config(job["url"]), email=job["email"])

    def fetch() -> str:
        request = client.export(job["recordset"], method=job["method"],
                                protocol=job["protocol"])
        request.download(job["out"])
        return ""

    return timed(fetch)


def sunpy_attrs(job: dict[str, Any]) -> list[Any]:
    import astropy.units as u
    from astropy.time import Time
    from sunpy.net import attrs as a

    sel = job["sunpy"]
    found = [a.Time(Time(sel["start"], scale=sel["scale"]), Time(sel["end"], scale=sel["scale"])),
             a.jsoc.Series(sel["series"]), a.jsoc.Segment(sel["segment"]),
             a.jsoc.Notify(job["email"]), a.jsoc.Protocol(job["protocol"])]
    if sel.get("wavelength"):
        found.append(a.Wavelength(sel["wavelength"] * u.AA))
    return found


def run_sunpy(job: dict[str, Any]) -> dict[str, Any]:
    import drms

    drms.config._server_configs["jsoc"] = server_config(job["url"], name="jsoc")
    set_drms_poll(job["drms_poll"])
    from sunpy.net import jsoc

    client = jsoc.JSOCClient()
    found = client.search(*sunpy_attrs(job))  # not timed

    def fetch() -> str:
        files = client.fetch(found, path=job["out"], progress=False, max_conn=1, max_splits=1,
                             sleep=job["sunpy_sleep"])
        return "; ".join(str(e) for e in files.errors)[:500]

    return {**timed(fetch), "records": len(found)}


def main(argv: list[str]) -> int:
    tool, job = argv[0], json.loads(argv[1])
    try:
        result = run_drms(job) if tool == "drms" else run_sunpy(job)
    except Exception as exc:  # reported to the parent, which prints it and carries on
        result = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
