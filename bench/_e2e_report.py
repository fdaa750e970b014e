"""What `bench.e2e` prints: the machine, one table per workload, the summary, in markdown."""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
import statistics
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench._e2e_tools import Reference, Run, Tool

PACKAGES = ("aiohttp", "drms", "sunpy", "parfive", "sqlalchemy", "aiosqlite", "astropy",
            "numpy", "pandas")
CLIENT_COLUMNS = ("curl", "drms", "sunpy")


# ---- the machine -----------------------------------------------------------------------------

def _first(path: str, key: str) -> str:
    try:
        for line in Path(path).read_text().splitlines():
            name, _, value = line.partition(":" if ":" in line else "=")
            if name.strip() == key:
                return value.strip().strip('"')
    except OSError:
        pass
    return "?"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _curl_version() -> str:
    try:
        out = subprocess.run(["curl", "--version"], capture_output=True, text=True, timeout=10)
        return " ".join(out.stdout.splitlines()[0].split()[:2])
    except (OSError, IndexError, subprocess.SubprocessError):
        return "not installed"


def machine_markdown() -> list[str]:
    """Markdown lines naming the machine, Python and the package versions."""
    kib = _first("/proc/meminfo", "MemTotal").split()[0]
    ram = f"{int(kib) / 2**20:.1f} GiB" if kib.isdigit() else "?"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    packages = ", ".join(f"{p} {_version(p)}" for p in PACKAGES)
    return [
        "| machine | |", "|---|---|",
        f"| CPU | {_first('/proc/cpuinfo', 'model name')}, {os.cpu_count()} logical cores |",
        f"| RAM | {ram} |",
        f"| OS | {_first('/etc/os-release', 'PRETTY_NAME')}, Linux {platform.release()} |",
        f"| load average at start | {load} |",
        f"| Python | {platform.python_version()} ({platform.python_implementation()}) |",
        f"| packages | {packages} |",
        f"| curl | {_curl_version()} |",
    ]


# ---- results ---------------------------------------------------------------------------------

@dataclass
class WorkloadResult:
    """Every run of one workload, by tool name."""

    name: str
    title: str
    tools: list[Tool]
    reference: Reference | None = None
    runs: dict[str, list[Run]] = field(default_factory=dict)
    skipped: str = ""

    def timed(self, tool: str) -> list[Run]:
        return [r for r in self.runs.get(tool, []) if r.ok]

    def median(self, tool: str) -> float:
        times = [r.seconds for r in self.timed(tool)]
        return statistics.median(times) if times else math.nan

    def column(self, kind: str) -> Tool | None:
        """The tool of that kind (the first jsoc-bulk variant for kind jsoc-bulk)."""
        return next((t for t in self.tools if t.kind == kind), None)


def seconds_text(value: float) -> str:
    if math.isnan(value):
        return "–"
    return f"{value:.2f} s" if value < 10 else f"{value:.1f} s"


def number_text(value: float, digits: int = 1) -> str:
    return "–" if math.isnan(value) else f"{value:.{digits}f}"


def ratio_text(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.2f}×"


def _median_of(runs: list[Run], value: Callable[[Run], float]) -> float:
    values = [value(r) for r in runs if not math.isnan(value(r))]
    return statistics.median(values) if values else math.nan


def tool_row(result: WorkloadResult, tool: Tool) -> str:
    runs, timed = result.runs.get(tool.name, []), result.timed(tool.name)
    median, curl = result.median(tool.name), result.median("curl")
    nbytes = _median_of(timed, lambda r: float(r.nbytes))
    rate = nbytes / 1e6 / median if timed and median > 0 else math.nan
    spread = (f"{min(r.seconds for r in timed):.2f}–{max(r.seconds for r in timed):.2f}"
              if timed else "–")
    sim = [r.sim for r in runs if r.sim]
    polite = (f"{sum(s['violations'] for s in sim)} / {sum(s['refused'] for s in sim)} / "
              f"{sum(s['again'] for s in sim)} / {max((s['peak_conn'] for s in sim), default=0)}"
              f" / {number_text(_median_of(timed, lambda r: r.sim.get('downloads', 0)), 0)}")
    methods = sorted({r.method for r in runs if r.method})
    files = _median_of(timed, lambda r: float(r.files))
    return (f"| {tool.name} | {tool.method}, {tool.protocol} | {', '.join(methods) or '–'} | "
            f"{len(timed)}/{len(runs)} | {seconds_text(median)} | {spread} | "
            f"{number_text(files, 0)} | {number_text(nbytes / 1e6)} | {number_text(rate)} | "
            f"{ratio_text(curl / median)} | "
            f"{number_text(_median_of(timed, lambda r: r.cpu_per_gb))} | {polite} |")


def workload_markdown(result: WorkloadResult) -> list[str]:
    """One row per tool, then each failed run's error and each file mismatch."""
    lines = [f"#### {result.title}", ""]
    if result.skipped:
        return [*lines, f"skipped: {result.skipped}", ""]
    lines += ["| tool | asked for | emulator saw | ok runs | median | range s | files | MB "
              "| MB/s | speed vs curl | CPU s/GB | violations / refused / again B / peak conn "
              "/ file requests |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    lines += [tool_row(result, tool) for tool in result.tools]
    ref = result.reference
    if ref is not None:
        staging = (f"; one export of all of them takes {ref.staging_seconds:.1f} s to stage"
                   if ref.staging_seconds else "")
        lines.append(f"- every tool must get {ref.count} files, {ref.nbytes / 1e6:.1f} MB "
                     f"(what curl got){staging}")
    for tool in result.tools:
        for i, run in enumerate(result.runs.get(tool.name, []), 1):
            if run.error or run.mismatch:
                lines.append(f"- {tool.name} run {i}: {run.error or run.mismatch}")
    return [*lines, ""]


# ---- the summary -----------------------------------------------------------------------------

def _cell(result: WorkloadResult, kind: str) -> float:
    tool = result.column(kind)
    return result.median(tool.name) if tool else math.nan


def summary_markdown(results: list[WorkloadResult]) -> list[str]:
    """The headline table: medians per tool and jsoc-bulk's ratios (higher = jsoc-bulk faster)."""
    lines = ["| workload | curl (the limit) | drms export+download | sunpy fetch | jsoc-bulk "
             "| jsoc-bulk speed vs curl | vs drms | vs sunpy |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for result in results:
        if result.skipped:
            lines.append(f"| {result.title} | skipped: {result.skipped} | | | | | | |")
            continue
        curl, drms, sunpy, ours = (_cell(result, k) for k in (*CLIENT_COLUMNS, "jsoc-bulk"))
        lines.append(f"| {result.title} | {seconds_text(curl)} | {seconds_text(drms)} | "
                     f"{seconds_text(sunpy)} | {seconds_text(ours)} | {ratio_text(curl / ours)} "
                     f"| {ratio_text(drms / ours)} | {ratio_text(sunpy / ours)} |")
    return lines


TAR_PER_FILE, TAR_TAR, TAR_AUTO = "jsoc-bulk url_quick", "jsoc-bulk url-tar", "jsoc-bulk auto"


def tar_row(result: WorkloadResult) -> str:
    """One ladder step: the times, which of per-file / url-tar was faster, what auto used and
    whether that was the faster side."""
    ref = result.reference
    files = f"{ref.count:,} of ~{ref.nbytes / ref.count / 1e3:.0f} kB" if ref else result.title
    if result.skipped:
        return f"| {files} | skipped: {result.skipped} | | | | | | |"
    per_file, tar, auto = (result.median(n) for n in (TAR_PER_FILE, TAR_TAR, TAR_AUTO))
    faster = ("–" if math.isnan(per_file) or math.isnan(tar)
              else "url-tar" if tar < per_file else "url_quick")
    used = sorted({r.method for r in result.runs.get(TAR_AUTO, []) if r.method})
    verdict = ("–" if faster == "–" or len(used) != 1
               else "yes" if used == [faster] else "**no**")
    return (f"| {files} | {seconds_text(result.median('curl'))} | {seconds_text(per_file)} | "
            f"{seconds_text(tar)} | {seconds_text(auto)} | {', '.join(used) or '?'} | "
            f"{faster} | {verdict} |")


def tar_markdown(results: list[WorkloadResult]) -> list[str]:
    """The ladder as one table, then what each auto run started from and chose."""
    lines = ["| files | curl | jsoc-bulk url_quick (per file) | jsoc-bulk url-tar | jsoc-bulk "
             "auto | auto used | faster side | auto on it |",
             "|---:|---:|---:|---:|---:|---|---|---|"]
    lines += [tar_row(r) for r in results]
    lines.append("")
    for result in results:
        for i, run in enumerate(result.runs.get(TAR_AUTO, []), 1):
            lines.append(f"- {result.name} auto run {i}: {run.note or '?'}")
    return lines
