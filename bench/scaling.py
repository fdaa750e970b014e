"""Per-file cost against job size: claim, finish and status with 10³, 10⁵ and 10⁶ file rows in
one job, on SQLite and Postgres.

For each size a fresh database gets one running job whose files are spread over ready exports
(5,000 files per chunk, as the planner makes them). Then, repeated: a lane claims a batch of
64 files (``claim_file_batch``), the batch's outcomes are committed in one group commit
(``record_file_outcomes``), and ``job_summary`` (what ``GET /jobs/{id}`` reads) is called.
Times are medians per call (claim, status) and per file (finish); the last columns compare
each size with the smallest.

    python -m bench.scaling                      # sizes 1000,100000,1000000; both databases
    python -m bench.scaling --sizes 1000,100000 --databases sqlite
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import insert

from bench._procs import run_cli
from service.db import UNFENCED
from service.db.counters import recount_chunks
from service.db.migrate import upgrade_async
from service.db.models import Chunk, Export, File
from service.db.repo import Repo
from service.db.repo_files import FileOutcome

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_BENCH_DB = "jsoc_bulk_bench_scaling"
HOST = "127.0.0.1:9"
PER_CHUNK = 5_000
BATCH = 64


async def populate(repo: Repo, n_files: int) -> str:
    """One running job with ``n_files`` pending files in ready exports; returns its id."""
    job, _ = await repo.create_job({"series": "hmi.M_45s"}, notify_email="a@example.org")
    n_chunks = -(-n_files // PER_CHUNK)
    await repo.add_chunks(job.id, [{"seq": i, "recordset": f"hmi.M_45s[{i}]"}
                                   for i in range(n_chunks)])
    await repo.advance_plan(job.id, planned_until="end", next_seq=n_chunks, plan_done=True,
                            lease_token=UNFENCED)
    await repo.start_job(job.id)
    now = datetime.now(UTC)
    async with repo.engine.begin() as conn:
        chunks = [c.id for c in await repo.list_chunks(job.id)]
        for seq, chunk_id in enumerate(chunks):
            export_id = (await conn.execute(insert(Export).values(
                job_id=job.id, chunk_id=chunk_id, notify_email="a@example.org", state="ready",
                created_at=now, updated_at=now).returning(Export.id))).scalar_one()
            await conn.execute(Chunk.__table__.update().where(Chunk.id == chunk_id)
                               .values(state="ready"))
            first, last = seq * PER_CHUNK, min(n_files, (seq + 1) * PER_CHUNK)
            rows = [_file_row(job.id, chunk_id, export_id, i, now) for i in range(first, last)]
            await conn.execute(insert(File), rows)
    async with repo.engine.begin() as conn, repo._sessions(bind=conn) as s:
        await recount_chunks(s, chunks)
        await repo._register_hosts(s, [HOST])
        await s.flush()
    if repo.dialect == "postgresql":  # what autovacuum would do after such a load
        async with repo.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.exec_driver_sql("ANALYZE")
    return job.id


def _file_row(job_id: str, chunk_id: int, export_id: int, i: int,
              now: datetime) -> dict[str, Any]:
    return {"job_id": job_id, "chunk_id": chunk_id, "export_id": export_id,
            "record": f"hmi.M_45s[{i}]", "segment": "magnetogram", "file_key": f"k:{i}",
            "url": f"http://{HOST}/SUM1/{i}.fits", "host": HOST, "dest_path": f"d/{i}.fits",
            "size_expected": 100, "state": "pending", "bytes_done": 0, "attempts": 0,
            "lease_token": 0, "created_at": now, "updated_at": now}


async def timed(fn: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await fn()
    return time.perf_counter() - started, result


async def measure(repo: Repo, job_id: str, rounds: int) -> dict[str, float]:
    """Median seconds: claim of a batch, finish per file (group commit), status."""
    claims, finishes, statuses = [], [], []
    for _ in range(rounds):
        seconds, batch = await timed(lambda: repo.claim_file_batch(
            "bench", HOST, lane="bench#1", max_files=BATCH, lease_seconds=600))
        claims.append(seconds)
        outcomes = [FileOutcome(c.file_id, "done", c.lease_token, sha256="0" * 64, size=100)
                    for c in batch]
        seconds, _ = await timed(lambda: repo.record_file_outcomes(outcomes))  # noqa: B023
        finishes.append(seconds / len(batch))
        seconds, _ = await timed(lambda: repo.job_summary(job_id))
        statuses.append(seconds)
    return {"claim": statistics.median(claims), "finish": statistics.median(finishes),
            "status": statistics.median(statuses)}


async def fresh_url(kind: str, workdir: Path, size: int) -> str:
    if kind == "sqlite":
        return f"sqlite+aiosqlite:///{workdir / f'scaling-{size}.db'}"
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {PG_BENCH_DB}")
        await conn.execute(f"CREATE DATABASE {PG_BENCH_DB}")
    finally:
        await conn.close()
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{PG_BENCH_DB}"


async def run_size(kind: str, size: int, rounds: int, workdir: Path) -> dict[str, float]:
    url = await fresh_url(kind, workdir, size)
    await upgrade_async(url)
    repo = Repo.from_url(url)
    try:
        started = time.perf_counter()
        job_id = await populate(repo, size)
        print(f"  {kind}: {size:,} files written in {time.perf_counter() - started:.1f} s",
              flush=True)
        return await measure(repo, job_id, rounds)
    finally:
        await repo.close()


def report(kind: str, results: dict[int, dict[str, float]]) -> None:
    base = results[min(results)]
    print(f"\n| {kind} | claim of {BATCH} | finish per file | status | claim × | finish × "
          "| status × |\n|---|---:|---:|---:|---:|---:|---:|")
    for size, r in sorted(results.items()):
        ratios = " | ".join(f"{r[k] / base[k]:.2f}" for k in ("claim", "finish", "status"))
        print(f"| {size:,} files | {r['claim'] * 1e3:.2f} ms | {r['finish'] * 1e3:.3f} ms | "
              f"{r['status'] * 1e3:.2f} ms | {ratios} |")


async def amain(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="jsoc-bulk-scaling-") as tmp:
        for kind in args.databases:
            results = {size: await run_size(kind, size, args.rounds, Path(tmp))
                       for size in args.sizes}
            report(kind, results)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,100000,1000000",
                        type=lambda v: [int(x) for x in v.split(",")])
    parser.add_argument("--databases", default="sqlite,postgresql",
                        type=lambda v: v.split(","))
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv if argv is not None else [])
    asyncio.run(amain(args))


if __name__ == "__main__":
    import sys

    run_cli(lambda: main(sys.argv[1:]))
