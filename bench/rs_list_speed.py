"""How fast does the emulator answer `jsoc_info?op=rs_list` for 10,000 records?

Starts `python -m jsocsim` as a subprocess and times the query below (n=10000 caps it at
exactly 10,000 records) over HTTP from a fresh aiohttp client per run (request + JSON parse),
and with `drms.Client.query` on the same record set (request + drms's pandas parsing), each
the median of `--runs` runs after one untimed warm-up. Aim: well under a second over HTTP.
Usage: `python -m bench.rs_list_speed [--runs 5] [--records 10000]`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import drms

from bench._procs import run_cli
from bench.emulator_vs_nginx import EmulatorProcess

RECORD_SET = "aia.lev1_euv_12s[2014-01-01T00:00:00Z/6h]"  # 12,600 records; n caps the count
KEYS = ["T_REC", "WAVELNTH", "EXPTIME", "QUALITY", "T_OBS", "CRLT_OBS"]
SEGMENT = "image"
TARGET_SECONDS = 1.0


def drms_config(base_url: str) -> drms.ServerConfig:
    """A drms server configuration pointing at the emulator."""
    return drms.ServerConfig(
        name="jsocsim", cgi_baseurl=base_url + "cgi-bin/ajax/", cgi_show_series="show_series",
        cgi_show_series_wrapper="showextseries", show_series_wrapper_dbhost="hmidb2",
        cgi_jsoc_info="jsoc_info", cgi_jsoc_fetch="jsoc_fetch",
        cgi_check_address="checkAddress.sh", http_download_baseurl=base_url, encoding="latin1")


async def rs_list_over_http(base_url: str, records: int) -> tuple[int, float]:
    """One rs_list from a fresh client: (record count, emulator-reported runtime)."""
    params = {"op": "rs_list", "ds": RECORD_SET, "key": ",".join(KEYS), "seg": SEGMENT,
              "n": str(records)}
    async with aiohttp.ClientSession() as session, \
            session.get(base_url + "cgi-bin/ajax/jsoc_info", params=params) as resp:
        resp.raise_for_status()
        reply = await resp.json(content_type=None)
    if reply.get("status") != 0:
        raise RuntimeError(f"rs_list failed: {reply.get('error', reply)}")
    paths = reply["segments"][0]["values"]
    if len(paths) != reply["count"] or any(len(k["values"]) != reply["count"]
                                           for k in reply["keywords"]):
        raise RuntimeError("rs_list reply has columns of different lengths")
    return int(reply["count"]), float(reply.get("runtime", "nan"))


def query_with_drms(base_url: str, records: int) -> int:
    """drms.Client.query of the same record set (keywords and segment); returns the row count."""
    client = drms.Client(drms_config(base_url))
    keys, segments = client.query(RECORD_SET, key=KEYS, seg=SEGMENT, n=records)
    if len(keys) != len(segments):
        raise RuntimeError("drms returned keyword and segment tables of different lengths")
    return len(keys)


def timed_runs(action: Callable[[], Any], runs: int) -> tuple[list[float], Any]:
    """One untimed warm-up, then `runs` timed calls: (seconds per run, last result)."""
    result = action()
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        result = action()
        seconds.append(time.perf_counter() - start)
    return seconds, result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.rs_list_speed",
                                     description="jsocsim rs_list speed for 10,000 records")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per client (default 5)")
    parser.add_argument("--records", type=int, default=10_000,
                        help="records to list, at most 12600 (default 10000)")
    args = parser.parse_args(argv)
    if not 1 <= args.runs <= 50:
        parser.error(f"--runs must be 1..50, got {args.runs}")
    if not 1 <= args.records <= 12_600:
        parser.error(f"--records must be 1..12600 (the record set holds 12,600), "
                     f"got {args.records}")
    return args


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print median seconds for raw HTTP and for drms."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-rslist-") as tmp, \
            EmulatorProcess(Path(tmp) / "jsocsim") as emulator:
        base = emulator.base_url
        http_times, (count, runtime) = timed_runs(
            lambda: asyncio.run(rs_list_over_http(base, args.records)), args.runs)
        drms_times, drms_rows = timed_runs(lambda: query_with_drms(base, args.records),
                                           args.runs)
    if count < args.records or drms_rows != count:
        raise RuntimeError(f"expected {args.records} records, got {count} over HTTP and "
                           f"{drms_rows} from drms")
    print(f"rs_list {RECORD_SET} n={args.records}: key={','.join(KEYS)} seg={SEGMENT}; "
          f"{count} records; median of {args.runs} runs")
    http = statistics.median(http_times)
    verdict = "ok" if http < TARGET_SECONDS else f"NOT under {TARGET_SECONDS:.0f}s"
    print(f"  HTTP (fresh aiohttp client, JSON parsed): {http:.3f}s "
          f"(min {min(http_times):.3f}, max {max(http_times):.3f}; emulator-reported "
          f"runtime {runtime:.3f}s) {verdict}")
    print(f"  drms.Client.query (incl. pandas parsing): {statistics.median(drms_times):.3f}s "
          f"(min {min(drms_times):.3f}, max {max(drms_times):.3f})")


if __name__ == "__main__":
    run_cli(main)
