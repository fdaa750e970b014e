"""jsoc-bulk side by side with curl, drms and sunpy, end to end against the emulator.

One `python -m jsocsim` process per workload on 127.0.0.1 (its own data dir, `--dup-window 0`
so no export is answered from an earlier tool's, explicit `--staging-*` flags); every tool
fetches the same records from it over one download connection. Before timing, the workload's
files are exported once and fetched once by curl (untimed: the emulator generates files on
first use); the latency / bandwidth / staging-cost options are switched on after that warm-up
through `POST /_sim/config` when the emulator has it (else they are given at start).

    python -m bench.e2e [--workloads small,large,latency,staged,tar] [--repeat 3]

Workloads: small (300 AIA files of ~37 KB, loopback), large (10 HMI files of ~25 MB),
latency (small with 50 ms per request and 20 MiB/s per download), staged (a fits/url job that
jsoc-bulk splits into 5 exports, staging as long as downloading), tar (a ladder of 100 to 1,500
files of ~100 kB per file vs url-tar vs auto, with the latency model and JSOC-like staging;
auto starts with the staging its daemon would have learned from the smaller steps, see
bench/_e2e_staging.py). Tools, medians, speed (curl time / tool time), CPU s
per GB and what the emulator saw (violations, refused connections, bytes served again, peak
connections) are printed as markdown, with the machine at the top. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from bench._e2e_report import (
    WorkloadResult,
    machine_markdown,
    summary_markdown,
    tar_markdown,
    workload_markdown,
)
from bench._e2e_sim import Sim, SimFeatures, emulator, export_urls, sim_features
from bench._e2e_staging import StagingHistory, StagingLink
from bench._e2e_tools import (
    Options,
    Reference,
    Run,
    Selection,
    Tool,
    curl_fetch,
    dir_summary,
    run_tool,
)
from bench._procs import run_cli

MiB = 2**20
START = datetime(2014, 1, 1)
LATENCY = 0.05
BANDWIDTH = 20 * MiB
FLAT_STAGING = ("--staging-delay", "1")  # the emulator's flat model: 1 s per export, no costs
# The tar ladder's staging model: the emulator's JSOC figures (20 s before any export is
# ready, 3 exports staged at once site-wide) with 0.02 s per record and nothing per MB. The
# emulator's per-MB cost counts the catalog's record sizes (~10 MB per AIA image), not the
# ~100 kB files it serves here, so the per-record cost stands for linking and tarring one such
# file. No source gives JSOC's per-record cost: with the emulator's default (0.5 s a record)
# staging grows ten times faster than 50-ms round trips and url-tar never wins.
TAR_STAGING = ("--staging-model", "jsoc", "--staging-per-record", "0.02", "--staging-per-mb", "0")


def as_is_tools() -> list[Tool]:
    return [Tool("curl", "curl", "url_quick", "as-is"), Tool("drms", "drms", "url_quick", "as-is"),
            Tool("sunpy", "sunpy", "url_quick", "as-is"),
            Tool("jsoc-bulk", "jsoc-bulk", "url_quick", "as-is")]


@dataclass
class Workload:
    """One emulator configuration, the records, and the tools that fetch them."""

    name: str
    title: str  # "{size}" becomes " of ~37 kB" once the files are known
    selection: Selection
    tools: list[Tool]
    sim_args: list[str]  # given at start
    runtime: dict[str, float] = field(default_factory=dict)  # switched on after the warm-up
    needs: tuple[str, ...] = ()  # emulator flags without which the workload is skipped
    staging_like_download: bool = False  # staging_per_record = mean file size / bandwidth
    notes: list[str] = field(default_factory=list)


# ---- the workloads ---------------------------------------------------------------------------

def aia(files: int) -> Selection:
    return Selection("aia.lev1_euv_12s", START, 12 * files, "utc", 12, "image", 171)


def hmi(files: int) -> Selection:
    return Selection("hmi.M_720s", START, 720 * files, "tai", 720, "magnetogram")


def small(args: argparse.Namespace) -> list[Workload]:
    return [Workload("small", f"{args.small_files} AIA files{{size}}, loopback",
                     aia(args.small_files), as_is_tools(),
                     ["--file-size", "64K", *FLAT_STAGING])]


def large(args: argparse.Namespace) -> list[Workload]:
    return [Workload("large", f"{args.large_files} HMI files{{size}}, loopback",
                     hmi(args.large_files), as_is_tools(),
                     ["--file-size", args.large_size, *FLAT_STAGING])]


def latency(args: argparse.Namespace) -> list[Workload]:
    return [Workload("latency", f"the {args.small_files} AIA files{{size}} with 50 ms per "
                     "request and 20 MiB/s per download", aia(args.small_files), as_is_tools(),
                     ["--file-size", "64K", *FLAT_STAGING],
                     {"latency": LATENCY, "bandwidth": BANDWIDTH}, needs=("--latency",))]


def staged(args: argparse.Namespace) -> list[Workload]:
    chunk = ("--max-chunk-records", str(args.staged_chunk))
    tools = [Tool("curl", "curl", "url", "fits"), Tool("drms", "drms", "url", "fits"),
             Tool("sunpy", "sunpy", "url", "fits"),
             Tool("jsoc-bulk", "jsoc-bulk", "url", "fits", chunk)]
    exports = -(-args.staged_files // args.staged_chunk)
    return [Workload(
        "staged", f"{args.staged_files} HMI fits files{{size}} at "
        f"{parse_size(args.staged_bandwidth) / MiB:g} MiB/s per download, staging as long as "
        "downloading; jsoc-bulk in "
        f"{exports} exports", hmi(args.staged_files), tools,
        ["--file-size", args.staged_size, *FLAT_STAGING],
        {"bandwidth": parse_size(args.staged_bandwidth)}, needs=("--staging-per-record",),
        staging_like_download=True)]


def tar_tools(history: StagingHistory, step: str) -> list[Tool]:
    """curl, and jsoc-bulk per file, url-tar (its staging kept for the larger steps) and
    auto (started with the smaller steps' staging history: bench/_e2e_staging.py)."""
    return [Tool("curl", "curl", "url_quick", "as-is"),
            Tool("jsoc-bulk url_quick", "jsoc-bulk", "url_quick", "as-is"),
            Tool("jsoc-bulk url-tar", "jsoc-bulk", "url-tar", "as-is",
                 staging=StagingLink(history, step, "keep")),
            Tool("jsoc-bulk auto", "jsoc-bulk", "auto", "as-is",
                 staging=StagingLink(history, step, "seed"))]


def tar(args: argparse.Namespace) -> list[Workload]:
    """The ladder: each file size, file counts ascending (a history per size)."""
    counts = sorted(int(n) for n in str(args.tar_files).split(","))
    workloads = []
    for size in args.tar_sizes.split(","):
        history = StagingHistory()
        workloads += [Workload(f"tar-{count}-{size}", f"tar: {count} AIA files{{size}}, "
                               "50 ms per request, 20 MiB/s", aia(count),
                               tar_tools(history, f"tar-{count}-{size}"),
                               ["--file-size", size, *TAR_STAGING],
                               {"latency": LATENCY, "bandwidth": BANDWIDTH},
                               needs=("--latency", "--staging-model"))
                      for count in counts]
    return workloads


WORKLOADS: dict[str, Callable[[argparse.Namespace], list[Workload]]] = {
    "small": small, "large": large, "latency": latency, "staged": staged, "tar": tar}


def size_text(nbytes: float) -> str:
    return f"{nbytes / 1e6:.1f} MB" if nbytes >= 1e6 else f"{nbytes / 1e3:.0f} kB"


def parse_size(text: str) -> int:
    units = {"K": 2**10, "M": MiB, "G": 2**30}
    text = text.strip().upper()
    return int(float(text[:-1]) * units[text[-1]]) if text[-1:] in units else int(text)


# ---- preparing and running one workload --------------------------------------------------------

RUNTIME_FLAGS = {"latency": "--latency", "bandwidth": "--bandwidth",
                 "staging_per_record": "--staging-per-record"}
HMI_COMPRESSION = 0.2  # stored size / --file-size of HMI magnetograms (measured)


def runtime_changes(w: Workload, mean_size: float) -> dict[str, float]:
    changes = dict(w.runtime)
    if w.staging_like_download:
        changes["staging_per_record"] = round(mean_size / w.runtime["bandwidth"], 4)
    return changes


def runtime_names(w: Workload) -> list[str]:
    return [*w.runtime, *(["staging_per_record"] if w.staging_like_download else [])]


def start_args(w: Workload, features: SimFeatures) -> list[str]:
    """The emulator's flags; the run-time options too when POST /_sim/config cannot set them
    after the warm-up (the staging cost is then estimated from --file-size)."""
    if features.can_set_at_run_time(runtime_names(w)):
        return ["--dup-window", "0", *w.sim_args]
    estimate = parse_size(w.sim_args[w.sim_args.index("--file-size") + 1]) * HMI_COMPRESSION
    extra = [x for k, v in runtime_changes(w, estimate).items() for x in (RUNTIME_FLAGS[k], str(v))]
    w.notes.append("run-time options given at start (no POST /_sim/config): the warm-up ran "
                   "with them, and the staging cost (if any) is estimated")
    return ["--dup-window", "0", *w.sim_args, *extra]


def prepare(w: Workload, sim: Sim, features: SimFeatures, tmp: Path, timeout: float) -> Reference:
    """One export, fetched once by curl (untimed; the emulator generates files on first use),
    then the workload's latency/bandwidth/staging options switched on."""
    ref_tool = w.tools[0]
    export = export_urls(sim, w.selection.recordset, ref_tool.method, ref_tool.protocol)
    warm, _ = curl_fetch(export.urls, tmp / "warm-up", timeout)
    count, nbytes = dir_summary(tmp / "warm-up")
    shutil.rmtree(tmp / "warm-up")
    if not count:
        raise RuntimeError(f"the reference export of {w.selection.recordset} has no files")
    if runtime_names(w) and features.can_set_at_run_time(runtime_names(w)):
        sim.configure(**runtime_changes(w, nbytes / count))
    print(f"  {w.selection.recordset}: {count} files, {nbytes / 1e6:.1f} MB "
          f"(mean {size_text(nbytes / count)}) from one {ref_tool.method}/{ref_tool.protocol} "
          f"export; warm-up fetch {warm:.1f} s (untimed)", flush=True)
    staging = 0.0
    if w.staging_like_download:
        staging = export_urls(sim, w.selection.recordset, ref_tool.method,
                              ref_tool.protocol).seconds
        print(f"  staging model {staging_shown(sim)}: one export of all {count} records takes "
              f"{staging:.1f} s to stage", flush=True)
    sim.reset()
    return Reference(export.urls, count, nbytes, staging)


def staging_shown(sim: Sim) -> str:
    try:
        shown = sim.configure()
    except Exception:  # no /_sim/config: the flags were given at start
        return "(set at start)"
    return ", ".join(f"{k}={v}" for k, v in shown.items() if k.startswith(("staging", "band")))


def run_workload(w: Workload, args: argparse.Namespace, features: SimFeatures,
                 opts: Options) -> WorkloadResult:
    result = WorkloadResult(w.name, w.title.format(size=""), w.tools)
    missing = [flag for flag in w.needs if flag not in features.flags]
    if missing:
        result.skipped = f"emulator has no {', '.join(missing)}"
        print(f"  skipped: {result.skipped}", flush=True)
        return result
    try:
        with tempfile.TemporaryDirectory(prefix=f"bench-e2e-{w.name}-") as tmp_name:
            tmp = Path(tmp_name)
            with emulator(tmp, start_args(w, features)) as sim:
                result.reference = ref = prepare(w, sim, features, tmp, opts.timeout)
                result.title = w.title.format(size=f" of ~{size_text(ref.nbytes / ref.count)}")
                for rep in range(1, args.repeat + 1):
                    for tool in w.tools:
                        run = run_tool(tool, sim, w.selection, ref, tmp / f"{tool.slug}-{rep}",
                                       opts)
                        result.runs.setdefault(tool.name, []).append(run)
                        print_run(rep, run)
    except Exception as exc:  # this workload could not run: say why, go on with the next
        result.skipped = f"failed: {type(exc).__name__}: {exc}"[:500]
        print(f"  {result.skipped}", flush=True)
    for note in w.notes:
        print(f"  note: {note}")
    return result


def print_run(rep: int, run: Run) -> None:
    seen = "/".join(str(run.sim.get(k, "?"))
                    for k in ("violations", "refused", "again", "peak_conn", "downloads"))
    print(f"  run {rep} {run.tool:20} {run.seconds:8.2f} s  {run.files:5d} files"
          f"  {run.nbytes / 1e6:8.1f} MB  cpu {run.cpu:6.2f} s  sim {seen}"
          f"  {run.error or run.mismatch or 'ok'}", flush=True)
    if run.note:
        print(f"        {run.note}", flush=True)


# ---- the command -----------------------------------------------------------------------------

def tools_markdown(opts: Options) -> list[str]:
    return [
        "- curl: one process, `--config` with every URL of one export made beforehand (not "
        "timed), one keep-alive HTTP/1.1 connection, no `-Z`.",
        "- drms: `drms.Client(...).export(ds, method, protocol)` + `request.download(dir)` "
        f"timed together (export + wait polling every {opts.drms_poll:g} s + download, one "
        "urllib connection per file, one at a time), in a child process.",
        "- sunpy: `JSOCClient().search(...)` (not timed), then `.fetch(max_conn=1, "
        f"max_splits=1, sleep={opts.sunpy_sleep:g})` timed (sunpy sleeps sleep/2 after the "
        "export request; drms polls as above; parfive downloads), in a child process.",
        "- jsoc-bulk: a fresh `jsoc-bulk serve` (SQLite, new data dir) per run, healthy before "
        "the clock starts; timed from just before `POST /api/v1/jobs` to the job's recorded "
        "`finished_at`"
        + (f"; daemon flags {' '.join(opts.daemon_args)}" if opts.daemon_args else "") + ".",
        "- CPU: curl as a reaped child (getrusage), drms/sunpy their own process over the timed "
        "span, jsoc-bulk the daemon's /proc utime+stime over the job. Speed = curl time / tool "
        "time. The emulator's stats are reset before each run; progress lines show them as "
        "`sim violations/refused connections/bytes served again/peak connections/file "
        "requests`.",
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__.split("\n")[0])
    add = p.add_argument
    add("--workloads", default=",".join(WORKLOADS), help="comma-separated, of: "
        + ", ".join(WORKLOADS) + " (default all)")
    add("--repeat", type=int, default=3, help="runs of each tool per workload (median shown)")
    add("--timeout", type=float, default=600.0, help="seconds one tool run may take")
    add("--small-files", type=int, default=300)
    add("--large-files", type=int, default=10)
    add("--large-size", default="128M", help="emulator --file-size of the large workload")
    add("--staged-files", type=int, default=60)
    add("--staged-size", default="8M", help="emulator --file-size of the staged workload")
    add("--staged-bandwidth", default="5M", help="per download, staged workload")
    add("--staged-chunk", type=int, default=12, help="jsoc-bulk --max-chunk-records (staged)")
    add("--tar-files", default="100,300,1000,1500", help="file counts of the tar workload's "
        "ladder, comma-separated (auto starts with the staging history of the smaller ones)")
    add("--tar-sizes", default="210K", help="emulator --file-size values of the tar workload, "
        "comma-separated (210K gives AIA files of ~100 kB, 2100K ~1 MB)")
    add("--sunpy-sleep", type=float, default=10.0, help="sunpy fetch(sleep=...), its default 10")
    add("--drms-poll", type=float, default=5.0, help="drms ExportRequest.wait sleep, default 5")
    add("--daemon-arg", action="append", default=[], metavar="FLAG",
        help="extra flag for every jsoc-bulk daemon, e.g. --daemon-arg=--poll-min=1")
    args = p.parse_args(argv)
    unknown = set(args.workloads.split(",")) - set(WORKLOADS)
    if unknown or args.repeat < 1:
        p.error(f"unknown workload(s) {sorted(unknown)}" if unknown else "--repeat must be >= 1")
    return args


def report(results: list[WorkloadResult]) -> None:
    main_rows = [r for r in results if not r.name.startswith("tar")]
    if main_rows:
        print("\n### Summary (medians; ratios > 1: jsoc-bulk faster)\n")
        print("\n".join(summary_markdown(main_rows)))
    tars = [r for r in results if r.name.startswith("tar")]
    if tars:
        print("\n### Per file vs url-tar (50 ms per request, 20 MiB/s; staging "
              f"{' '.join(TAR_STAGING)})\n")
        print("\n".join(tar_markdown(tars)))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    if shutil.which("curl") is None:
        print("curl is not installed; nothing to compare with", file=sys.stderr)
        return
    opts = Options(args.timeout, args.sunpy_sleep, args.drms_poll, tuple(args.daemon_arg))
    features = sim_features()
    print(f"## bench.e2e ({datetime.now():%Y-%m-%d %H:%M}), --repeat {args.repeat}\n")
    print("\n".join([*machine_markdown(), "", *tools_markdown(opts)]), flush=True)
    results = []
    for name in args.workloads.split(","):
        for w in WORKLOADS[name](args):
            print(f"\n== {w.name}: {w.title.format(size='')} ({' '.join(w.sim_args)})",
                  flush=True)
            results.append(run_workload(w, args, features, opts))
            print("\n" + "\n".join(workload_markdown(results[-1])), flush=True)
    report(results)


if __name__ == "__main__":
    run_cli(main)
