"""``jsoc-bulk files`` (a job's files, with absolute paths) and ``jsoc-bulk verify`` (files on
disk against what was recorded: from the API for a job, from the manifests for a directory).

verify exits 0 when every file matches, 1 naming each missing or different file; with
``--refetch`` the job is asked to fetch those again (the daemon checks them itself first).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from jsoc_bulk.client import Client, Job
from service.filecheck import Expected, Mismatch, check_file
from service.manifest import (
    MANIFEST_PREFIX,
    MANIFEST_SUFFIX,
    find_manifests,
    manifest_name,
    manifest_path,
    read_manifest,
)
from service.states import FileState

CSV_FIELDS = ("path", "record", "segment", "state", "size", "sha256", "error")
FILE_STATES = tuple(FileState)


def add_commands(command: Any) -> None:
    """Register ``files`` and ``verify`` (``command(name, help)`` makes a subparser)."""
    files = command("files", "list a job's files with absolute paths")
    files.add_argument("job_id", metavar="JOB")
    files.add_argument("--state", choices=FILE_STATES, help="only files in this state")
    fmt = files.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print a JSON array of the files")
    fmt.add_argument("--csv", action="store_true", help="print CSV with a header row")

    verify = command("verify", "re-check size and sha256 of a job's files (JOB: as the "
                     "daemon recorded them; DIR: as the manifests in it list them)")
    verify.add_argument("target", metavar="JOB|DIR")
    verify.add_argument("--refetch", action="store_true",
                        help="ask the job to fetch again the files found missing or different")


def _entries(job: Job, state: str | None) -> Iterator[dict[str, Any]]:
    for entry in job.files(state):
        data = entry.as_dict()
        del data["id"]
        yield data


def cmd_files(args: argparse.Namespace, client: Client) -> int:
    job = client.job(args.job_id)
    entries = _entries(job, args.state)
    if args.json:
        _print_json_array(entries)
    elif args.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(entries)
    else:
        count = 0
        for e in entries:
            count += 1
            size = "-" if e["size"] is None else str(e["size"])
            print(f"{e['state']:<11} {size:>12}  {e['path']}"
                  + (f"  ({e['error']})" if e["error"] else ""))
        if not count:
            print("no files" + (f" in state {args.state}" if args.state else ""))
    return 0


def _print_json_array(items: Iterable[dict[str, Any]]) -> None:
    """A JSON array printed item by item (a job may have millions of files)."""
    sys.stdout.write("[")
    for i, item in enumerate(items):
        sys.stdout.write(("," if i else "") + "\n  " + json.dumps(item, sort_keys=True))
    sys.stdout.write("\n]\n")


def cmd_verify(args: argparse.Namespace, client_factory: Any) -> int:
    target = Path(args.target)
    if target.is_dir():
        bad_by_job = _verify_dir(target)
    else:
        if "/" in args.target:
            raise ValueError(f"{args.target} is not a directory; give a job id or a directory "
                             "holding jsoc-bulk manifests")
        client = client_factory()
        bad_by_job = {args.target: _report(_job_expected(client.job(args.target)))}
    bad = sum(len(v) for v in bad_by_job.values())
    if args.refetch and bad:
        _retry(client_factory(), bad_by_job)
    return 1 if bad else 0


def _job_expected(job: Job) -> Iterator[Expected]:
    for e in job.files(FileState.DONE):
        yield Expected(Path(e.path), e.size, e.sha256, _label(e.record, e.segment), e.id)


def _label(record: str | None, segment: str | None) -> str:
    return f"{record}{{{segment}}}" if segment else str(record or "")


def _manifest_expected(manifest: Path) -> Iterator[Expected]:
    """A manifest's entries, the last line of each path only (two passes: only the paths are
    held in memory, not the entries)."""
    last = {entry["path"]: n for n, entry in enumerate(read_manifest(manifest))}
    for n, entry in enumerate(read_manifest(manifest)):
        if last.get(entry["path"]) == n:
            yield Expected(manifest.parent / entry["path"], entry.get("size"),
                           entry.get("sha256"), _label(entry.get("record"), entry.get("segment")))


def _verify_dir(directory: Path) -> dict[str, list[Mismatch]]:
    manifests = find_manifests(directory)
    if not manifests:
        raise ValueError(f"no jsoc-bulk manifest ({MANIFEST_PREFIX}<job>{MANIFEST_SUFFIX}) in "
                         f"or below {directory}")
    return {m.name[len(MANIFEST_PREFIX):-len(MANIFEST_SUFFIX)]: _report(_manifest_expected(m))
            for m in manifests}


def _report(expected: Iterable[Expected]) -> list[Mismatch]:
    """Check every file; print each mismatch as it is found and a summary at the end."""
    bad: list[Mismatch] = []
    checked = total = 0
    for item in expected:
        checked += 1
        total += item.size or 0
        mismatch = check_file(item)
        if mismatch is not None:
            bad.append(mismatch)
            print(mismatch.line(), flush=True)
    print(f"checked {checked} file(s), {total} bytes: "
          + (f"{len(bad)} missing or different" if bad else "all match"), file=sys.stderr)
    return bad


def _retry(client: Client, bad_by_job: dict[str, list[Mismatch]]) -> None:
    for job_id, bad in bad_by_job.items():
        if not bad:
            continue
        job = client.job(job_id)
        ids = [m.expected.file_id for m in bad if m.expected.file_id is not None]
        if not ids:  # from a manifest: find the rows by path
            wanted = {str(m.expected.path.resolve()) for m in bad}
            ids = [e.id for e in job.files(FileState.DONE) if str(Path(e.path).resolve()) in wanted]
        info = job.retry(files=ids)
        print(f"job {job_id}: asked to fetch {len(ids)} file(s) again; it is {info['state']}",
              file=sys.stderr)


def files_location(api: Any, job: dict[str, Any]) -> str | None:
    """Where a job's files are: the absolute directory its manifest is in (the download
    directory when no file is done yet); None when the API does not say."""
    root = job.get("download_dir")
    if not root:
        return None
    template = (job.get("spec") or {}).get("path_template") or "{series}/{filename}"
    page = api.list_files(job["id"], state=FileState.DONE, limit=1)
    if not page["items"]:
        return str(root)
    return str(manifest_path(Path(root), template, page["items"][0]["dest_path"],
                             job["id"]).parent)


def where_line(api: Any, job: dict[str, Any]) -> str | None:
    """'files in DIR (manifest …; list them: jsoc-bulk files JOB)' for the end of a watch."""
    location = files_location(api, job)
    if location is None:
        return None
    done = (job.get("files") or {}).get(FileState.DONE, 0)
    manifest = manifest_name(job["id"]) if done else "none yet"
    return (f"files in {location} ({done} done; manifest {manifest}; list them: "
            f"jsoc-bulk files {job['id']})")
