"""On-disk cache of generated SUMS files and export directories, with a size/sha256 manifest.

URL paths (`/SUM12/D803708321/S00008/Dopplergram.fits`) map to files under
`<data_dir>/sums/`. Record segment files are generated on first request from a FileRecipe
(fitsgen). Export directories (`/SUM{n}/D{sunum}/S00000/`) are reserved here and filled by
`write_export_dir` (index files, tar) and `fill_export_dir` (payload, in a worker thread; a file
asked for before that is rendered on the spot). Every write records size and sha256 at once,
so `manifest()` is cheap. Writes are atomic (temp file + rename) and thread-safe.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import html
import io
import json
import os
import shutil
import tarfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from jsocsim.fitsgen import FileRecipe, content_seed

EXPORT_SUNUM_BASE = 900_000_000  # export storage units: below every series' SUNUM block


def normalize_url_path(url_path: str) -> str | None:
    """`/SUMn/D…/S…/name` with no `.`/`..` parts, or None when the path is not acceptable."""
    parts = PurePosixPath("/" + url_path.lstrip("/")).parts[1:]
    if not parts or any(p in (".", "..") for p in parts) or not parts[0].startswith("SUM"):
        return None
    return "/" + "/".join(parts)


def export_dir_path(sunum: int) -> str:
    """URL directory of an export storage unit (slot S00000), e.g. /SUM7/D1700000012/S00000."""
    return f"/SUM{sunum % 12 + 1}/D{sunum}/S00000"


class FileStore:
    """Generated and exported files on disk, addressed by URL path."""

    def __init__(self, config: Any, engine: Any) -> None:
        self.config = config
        self.engine = engine
        self.root = Path(config.data_dir) / "sums"
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._manifest: dict[str, dict[str, Any]] = {}
        self._recipes: dict[str, FileRecipe] = {}
        self._export_dirs: set[str] = set()
        self._unwritten: dict[str, FileRecipe] = {}  # export files not rendered yet
        self._next_export = 0
        self.before_locate: Callable[[], None] | None = None  # ExportManager's expiry sweep

    # ---- paths ---------------------------------------------------------------------------
    def disk_path(self, url_path: str) -> Path:
        """Where the file of `url_path` lives on disk."""
        return self.root / url_path.lstrip("/")

    def new_export_dir(self) -> str:
        """Reserve a fresh, empty export directory; returns its URL path."""
        with self._lock:
            self._next_export += 1
            sunum = EXPORT_SUNUM_BASE + self._next_export
            url_dir = export_dir_path(sunum)
            self._export_dirs.add(url_dir)
        disk = self.disk_path(url_dir)
        if disk.exists():  # left over from an earlier run with the same data_dir
            shutil.rmtree(disk)
        disk.mkdir(parents=True)
        return url_dir

    def remove_export_dir(self, url_dir: str) -> None:
        """Delete an export directory (expiry): its files are gone from HTTP; the manifest keeps
        them, marked ``"deleted": true``, so what was downloaded before can still be checked."""
        with self._lock:
            self._export_dirs.discard(url_dir)
            for path in [p for p in self._manifest if p.startswith(url_dir + "/")]:
                self._manifest[path]["deleted"] = True
                self._recipes.pop(path, None)
            for path in [p for p in self._unwritten if p.startswith(url_dir + "/")]:
                del self._unwritten[path]
        shutil.rmtree(self.disk_path(url_dir), ignore_errors=True)

    def remove_file(self, url_path: str) -> None:
        """Delete one file (tar exports drop their payload once the tar is written)."""
        with self._lock:
            self._manifest.pop(url_path, None)
            self._recipes.pop(url_path, None)
            self._unwritten.pop(url_path, None)
        self.disk_path(url_path).unlink(missing_ok=True)

    def _export_dir_of(self, url_path: str) -> str | None:
        """The export directory holding `url_path` (files of directory segments nest deeper)."""
        slot_dir = "/".join(url_path.split("/")[:4])  # "", SUMn, Dsunum, S00000
        return slot_dir if slot_dir in self._export_dirs else None

    # ---- writing -------------------------------------------------------------------------
    def write_bytes(self, url_path: str, data: bytes, recipe: FileRecipe | None = None) -> Path:
        """Write `data` atomically at `url_path` and record it in the manifest."""
        path = self.disk_path(url_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        self._remember(url_path, len(data), hashlib.sha256(data).hexdigest(), recipe)
        return path

    def write_recipe(self, url_path: str, recipe: FileRecipe) -> Path:
        """Render `recipe` and write it at `url_path`."""
        return self.write_bytes(url_path, recipe.render(), recipe)

    def add_export_files(self, url_dir: str, recipes: dict[str, FileRecipe]) -> None:
        """Announce export files; each is rendered by `fill_export_dir` or when first asked for."""
        with self._lock:
            self._unwritten.update({f"{url_dir}/{name}": r for name, r in recipes.items()})

    def fill_export_dir(self, url_dir: str) -> None:
        """Render every announced file of `url_dir` that is not on disk yet (worker thread)."""
        with self._lock:
            todo = [p for p in self._unwritten if p.startswith(url_dir + "/")]
        for path in todo:
            self._render_unwritten(path)

    def _render_unwritten(self, url_path: str) -> Path | None:
        recipe = self._unwritten.get(url_path)
        if recipe is None:
            return self._known_file(url_path)
        written = self.write_recipe(url_path, recipe)
        with self._lock:
            self._unwritten.pop(url_path, None)
        return written

    def _remember(self, url_path: str, size: int, sha256: str, recipe: FileRecipe | None) -> None:
        with self._lock:
            self._manifest[url_path] = {"size": size, "sha256": sha256}
            if recipe is not None:
                self._recipes[url_path] = recipe

    def _hash_existing(self, url_path: str, path: Path) -> None:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        self._remember(url_path, path.stat().st_size, digest.hexdigest(), None)

    # ---- reading -------------------------------------------------------------------------
    def manifest(self) -> dict[str, dict[str, Any]]:
        """{url path: {"size", "sha256"[, "deleted"]}} of every file generated or staged so far
        (files of expired exports stay listed with ``"deleted": true``)."""
        with self._lock:
            return {path: dict(entry) for path, entry in sorted(self._manifest.items())}

    async def locate(self, url_path: str) -> Path | None:
        """The file for `url_path` (generated on first use, off the event loop), or None."""
        path = normalize_url_path(url_path)
        if path is None:
            return None
        if self.before_locate is not None:
            self.before_locate()
        known = self._known_file(path)
        if known is not None or (self._export_dir_of(path) is not None
                                 and path not in self._unwritten):
            return known
        return await asyncio.to_thread(self.locate_sync, path)

    def is_directory(self, url_path: str) -> bool:
        """Whether `url_path` names a directory segment (in SUMS or in an export directory)."""
        path = normalize_url_path(url_path.rstrip("/"))
        if path is None:
            return False
        slot_dir = self._export_dir_of(path)
        if slot_dir is not None:
            prefix = path + "/"
            if path == slot_dir:
                return False
            with self._lock:
                return any(p.startswith(prefix) for p in (*self._manifest, *self._unwritten))
        return self.engine.locate_sums_directory(path) is not None

    def _known_file(self, url_path: str) -> Path | None:
        disk = self.disk_path(url_path)
        if url_path in self._manifest and disk.is_file():
            return disk
        return None

    def locate_sync(self, url_path: str) -> Path | None:
        """Blocking `locate` (for worker threads and tests)."""
        path = normalize_url_path(url_path)
        if path is None:
            return None
        known = self._known_file(path)
        if known is not None:
            return known
        if self._export_dir_of(path) is not None:
            return self._render_unwritten(path)
        recipe = self.sums_recipe(path)
        if recipe is None:
            return None
        disk = self.disk_path(path)
        if disk.is_file():  # cached by an earlier run with the same data_dir
            self._hash_existing(path, disk)
            with self._lock:
                self._recipes[path] = recipe
            return disk
        return self.write_recipe(path, recipe)

    def sums_recipe(self, url_path: str) -> FileRecipe | None:
        """Recipe of a record segment file at its SUMS path (None: no such online file)."""
        found = self.engine.locate_sums_path(url_path)
        if found is None:
            return None
        record, segment_name, filename = found
        if not record.online or record.file_missing(segment_name):
            return None
        return stored_file_recipe(self.config, record, record.series.segment(segment_name),
                                  filename)

    async def change_file(self, url_path: str) -> None:
        """Rewrite `url_path` with different bytes (changing-file fault); updates the manifest."""
        await asyncio.to_thread(self.change_file_sync, url_path)

    def change_file_sync(self, url_path: str) -> None:
        """Blocking `change_file`."""
        path = normalize_url_path(url_path) or url_path
        recipe = self._recipes.get(path)
        if recipe is not None:
            changed = dataclasses.replace(recipe, variant=recipe.variant + 1)
            self.write_recipe(path, changed)
            return
        disk = self.disk_path(path)
        if disk.is_file():  # index files, tars: append a comment line / padding byte
            self.write_bytes(path, disk.read_bytes() + b"\n")


def record_seed(config: Any, record_name: str, segment: str, filename: str) -> int:
    """Content seed of one stored file of one record segment."""
    return content_seed(getattr(config, "seed", 0), record_name, segment, filename)


def stored_file_recipe(config: Any, record: Any, segment: Any, filename: str) -> FileRecipe:
    """The file as stored in SUMS (what as-is exports deliver): no keywords in the header."""
    return FileRecipe(
        seed=record_seed(config, record.name(), segment.name, filename),
        filename=filename, segment_type=segment.type, nbytes=int(config.file_size),
        compress="compress" in (segment.cparms or "").lower(), keywords=None)


# ---- export directories ------------------------------------------------------------------------
NO_DATA_FILE = "NoDataFile"
NO_FITS_WARNING = ("warning=No FITS files were exported. The requested FITS files no longer "
                   "exist.")


@dataclass(frozen=True)
class ExportDirectory:
    """The directory segment holding an export file."""

    name: str  # its name in the export directory
    sums_path: str  # its SUMS path


@dataclass
class ExportFile:
    """One file of an export: its index row and how to make its bytes.

    A file inside a directory segment has `directory` set: the index lists the directory once
    (its name in the export directory, or its SUMS path for url_quick), as JSOC's export code
    does; the file itself lives at `<directory>/<member>`. `recipe` None: the stored file is
    missing (as-is exports list it as NoDataFile; fits exports leave it out).
    """

    record: str  # index.json "record" (fits: record name; as-is: name + {segment})
    filename: str  # name in the export directory (filenamefmt)
    sums_path: str  # the stored file's SUMS path (what url_quick lists)
    recipe: FileRecipe | None  # content of the exported file; None = missing
    directory: ExportDirectory | None = None  # the directory segment holding this file

    def row(self, quick: bool) -> dict[str, str]:
        """The index row (a directory segment's row for files inside one)."""
        if self.directory is not None:
            name = self.directory.sums_path if quick else self.directory.name
        else:
            name = self.sums_path if quick else self.filename
        return {"record": self.record,
                "filename": name if quick or self.recipe is not None else NO_DATA_FILE}


@dataclass
class ExportPlan:
    """Everything an export needs once the request passed its checks (request-id free)."""

    method: str
    protocol: str  # "fits" or "as-is" as echoed to the client
    rcount: int  # records
    size_mb: int  # survey size in MB
    size_limit_mb: int
    files: list[ExportFile] = field(default_factory=list)
    processing: str = ""  # "" or the step text for index.txt's # PROCESSING block
    digest: str = ""  # duplicate-detection MD5
    quick: bool = False  # url_quick + as-is without processing
    offline: bool = False  # some storage unit is offline (tape)
    keyword_rows: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    @property
    def count(self) -> int:
        """Files JSOC counts: index rows naming an existing file or directory."""
        return sum(1 for row in self.rows() if row["filename"] not in (NO_DATA_FILE, ""))

    @property
    def present(self) -> list[ExportFile]:
        """Files whose stored copy exists (what the export directory holds)."""
        return [f for f in self.files if f.recipe is not None]

    def rows(self, quick: bool = False) -> list[dict[str, str]]:
        """index.json "data": one row per file, per directory segment, per missing file."""
        rows, seen = [], set()
        for item in self.files:
            if self.protocol == "fits" and item.recipe is None:
                continue  # jsoc_export_as_fits skips missing files
            row = item.row(quick)
            key = (row["record"], row["filename"])
            if item.directory is None or key not in seen:
                rows.append(row)
                seen.add(key)
        if not rows and not quick:
            rows.append({"record": NO_FITS_WARNING, "filename": ""})
        return rows

    def size_refusal(self) -> dict[str, Any] | None:
        """Status 3 reply when the survey exceeds the limit."""
        if self.size_mb <= self.size_limit_mb:
            return None
        return {"requestid": "VOID", "method": self.method, "protocol": self.protocol,
                "wait": 0, "status": 3, "count": self.rcount, "size": self.size_mb,
                "error": f"Request exceeds max byte limit of {self.size_limit_mb}MB"}

    def quick_reply(self) -> dict[str, Any]:
        """url_quick + as-is with every storage unit online: the files' SUMS paths at once."""
        return {"rcount": self.rcount, "count": self.count, "size": self.size_mb, "dir": "",
                "data": self.rows(quick=True),
                "requestid": "", "method": self.method, "protocol": self.protocol, "wait": 0,
                "status": 0}


def index_header(plan: ExportPlan, requestid: str, url_dir: str, exptime: str) -> dict[str, str]:
    """index.json/index.txt header fields (all strings), as jsoc_export_as_fits/as_is write."""
    count, size = str(plan.count), str(plan.size_mb)
    if plan.protocol == "fits":
        return {"version": "0.5", "requestid": requestid, "method": plan.method,
                "protocol": "fits", "count": count, "size": size, "exptime": exptime,
                "dir": url_dir, "status": "0"}
    return {"version": "1", "requestid": requestid, "method": plan.method,
            "protocol": plan.protocol, "wait": "0", "count": count, "size": size,
            "status": "0", "dir": url_dir}


def write_export_dir(store: FileStore, plan: ExportPlan, requestid: str,
                     exptime: str) -> tuple[str, dict[str, Any]]:
    """Write index.{json,txt,html} (+ keywords.txt) and, for -tar, the files and the tar.

    Other exports only announce their files: `FileStore.fill_export_dir` renders them later
    (or `locate` on first request), so the export is complete once this returns.
    Returns (dir, index.json).
    """
    url_dir = store.new_export_dir()
    store.add_export_files(url_dir, {item.filename: item.recipe for item in plan.files
                                     if item.recipe is not None})  # the present files
    index: dict[str, Any] = dict(index_header(plan, requestid, url_dir, exptime))
    extra_files = []
    if plan.protocol == "fits":
        index["keywords"] = "**IN FITS FILES**"
    elif plan.protocol in ("jpg", "mpg", "mp4"):
        index["keywords"] = f"{plan.protocol} files"  # as jsoc_export_as_images writes
    else:
        index["keywords"] = f"{url_dir}/{requestid}.keywords.txt"
        store.write_bytes(index["keywords"], keywords_text(plan.keyword_rows).encode())
        extra_files.append(f"{requestid}.keywords.txt")
    tar = plan.method.endswith("-tar")
    if tar:
        index["tarfile"] = f"{url_dir}/{requestid}.tar"
    index["data"] = plan.rows()
    store.write_bytes(f"{url_dir}/index.json", json.dumps(index, indent=1).encode())
    store.write_bytes(f"{url_dir}/index.txt", index_text(index, plan.processing).encode())
    store.write_bytes(f"{url_dir}/index.html", index_html(index).encode())
    if tar:
        store.fill_export_dir(url_dir)
        names = [f.filename for f in plan.present] + ["index.json", "index.txt", "index.html"]
        store.write_bytes(index["tarfile"], tar_bytes(store, url_dir, names + extra_files))
        for name in dict.fromkeys(f.filename for f in plan.present):
            store.remove_file(f"{url_dir}/{name}")
    return url_dir, index


def index_text(index: dict[str, Any], processing: str) -> str:
    """index.txt: header lines, an optional # PROCESSING block, then # DATA rows."""
    lines = ["# JSOC Export Index"]
    lines += [f"{k}={v}" for k, v in index.items() if k != "data"]
    if processing:
        lines += ["# PROCESSING", *processing.split("|")]
    lines.append("# DATA")
    lines += [f"{row['record']}\t{row['filename']}" for row in index["data"]]
    return "\n".join(lines) + "\n"


def index_html(index: dict[str, Any]) -> str:
    """index.html: the header as a table and a link per file."""
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
                   for k, v in index.items() if k != "data")
    links = "".join(
        f'<li>{html.escape(r["record"])}: <a href="{html.escape(r["filename"])}">'
        f"{html.escape(r['filename'])}</a></li>" for r in index["data"])
    return (f"<html><head><title>JSOC export {html.escape(index['requestid'])}</title></head>"
            f"<body><table>{rows}</table><ul>{links}</ul></body></html>\n")


def keywords_text(rows: list[tuple[str, dict[str, str]]]) -> str:
    """<ID>.keywords.txt of as-is exports: one block of KEY=value lines per record."""
    out = []
    for record, values in rows:
        out.append(f"# {record}")
        out += [f"{name}={value}" for name, value in values.items()]
    return "\n".join(out) + "\n"


def tar_bytes(store: FileStore, url_dir: str, names: list[str]) -> bytes:
    """A tar of the named files of an export directory (each once, in order)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in dict.fromkeys(names):
            data = store.disk_path(f"{url_dir}/{name}").read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
