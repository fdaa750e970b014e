"""``jsoc-bulk``: run the daemon (``serve``) or talk to it over REST (every other command).

Settings come from flags, then ``JSOC_BULK_*`` environment variables, then the configuration
file (``--config`` or ``JSOC_BULK_CONFIG``), then defaults. Errors are
printed as one line (``jsoc-bulk: error: …``) with a non-zero exit code, never a traceback.

Exit codes: 0 success; 1 error (API refused, unreachable, bad settings); 2 bad usage;
with --wait / watch: 3 job completed with errors, 4 job failed or was cancelled.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from jsoc_bulk.client import Client
from service.apiclient import ApiClient, ApiError
from service.cli_files import add_commands as add_file_commands
from service.cli_files import cmd_files, cmd_verify, where_line
from service.cli_ops import add_ops_commands, cmd_config, cmd_health
from service.cli_options import add_settings_flags, add_spec_flags, spec_from_args
from service.cli_preview import print_preview
from service.cli_progress import exports_info, follow_job, human_bytes, status_line
from service.settings import Settings, SettingsError, load_settings
from service.states import JobState
from service.version import package_version

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_PARTIAL, EXIT_FAILED = 0, 1, 2, 3, 4
FINAL_EXIT = {JobState.SUCCEEDED: EXIT_OK, JobState.COMPLETED_WITH_ERRORS: EXIT_PARTIAL,
              JobState.FAILED: EXIT_FAILED, JobState.CANCELLED: EXIT_FAILED}
API_URL_ENV = "JSOC_BULK_API_URL"
DEBUG_ENV = "JSOC_BULK_DEBUG"
ACTIONS = ("cancel", "pause", "resume", "retry")


class CliError(Exception):
    """A failure to report as one line."""


# --- argument parsing ----------------------------------------------------------------------


def _common_parser(client: bool = False) -> argparse.ArgumentParser:
    """Settings flags (and --api-url). A client command accepts them all (--host and --port
    still lead to the API's URL) but lists only what it uses: --api-url and --token."""
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    title = "connection" if client else \
        "settings (flag > JSOC_BULK_* env > --config file > default)"
    group = common.add_argument_group(title)
    add_settings_flags(group)
    if client:
        for action in group._group_actions:
            if action.dest != "token":
                action.help = argparse.SUPPRESS
    group.add_argument("--api-url", help="URL of the jsoc-bulk API for client commands "
                       f"(env {API_URL_ENV}; default http://<host>:<port>/)")
    return common


def _top_parser(client: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jsoc-bulk", parents=[client],
                                     description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n")[-1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"jsoc-bulk {package_version()}")
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (settings flags accepted before or after the command)."""
    common, client = _common_parser(), _common_parser(client=True)
    parser = _top_parser(client)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, daemon: bool = False) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common if daemon else client], help=help_text,
                              description=help_text)

    serve = command("serve", "run the API and the workers in one process", daemon=True)
    only = serve.add_mutually_exclusive_group()
    only.add_argument("--api-only", action="store_true", help="run the REST API only")
    only.add_argument("--workers-only", action="store_true", help="run the workers only")
    serve.add_argument("--db-upgrade", action="store_true",
                       help="apply database migrations at start (SQLite is always migrated)")
    _add_job_commands(command)
    command("workers", "list workers with their heartbeats").add_argument(
        "--json", action="store_true", help="print the list as JSON")
    add_file_commands(command)
    db = command("db", "database maintenance", daemon=True)
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    db_sub.add_parser("upgrade", parents=[common], help="migrate the database to the newest schema")
    add_ops_commands(command, common)
    return parser


def _add_job_commands(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """submit, jobs, status, watch, the actions and delete."""
    submit = command("submit", "submit a job from flags and/or a JSON file")
    submit.add_argument("spec_file", nargs="?", metavar="SPEC.json",
                        help="job spec as JSON ('-' for stdin); flags override its fields")
    add_spec_flags(submit.add_argument_group("job spec fields"))
    submit.add_argument("--idempotency-key", help="retries with the same key return the same job")
    submit.add_argument("--dry-run", action="store_true",
                        help="only show what the job would select (records, bytes, exports, "
                        "first and last record, record sets); nothing is submitted")
    submit.add_argument("--wait", action="store_true", help="show progress until the job ends")
    _add_interval_flag(submit)
    submit.add_argument("--json", action="store_true", help="print the job as JSON")

    jobs = command("jobs", "list jobs, newest first")
    jobs.add_argument("--state", help="only jobs in this state")
    jobs.add_argument("--limit", type=int, default=50, help="jobs per page (default 50)")
    jobs.add_argument("--offset", type=int, default=0, help="jobs to skip")
    jobs.add_argument("--json", action="store_true", help="print the page as JSON")

    status = command("status", "show a job's state and progress")
    status.add_argument("job_id", metavar="JOB")
    status.add_argument("--json", action="store_true", help="print the status as JSON")

    watch = command("watch", "follow a job's progress until it ends")
    watch.add_argument("job_id", metavar="JOB")
    _add_interval_flag(watch)

    for action in ACTIONS:
        cmd = command(action, f"{action} a job")
        cmd.add_argument("job_id", metavar="JOB")
        cmd.add_argument("--json", action="store_true", help="print the job as JSON")

    delete = command("delete", "delete a job (its files are kept unless --delete-files)")
    delete.add_argument("job_id", metavar="JOB")
    delete.add_argument("--delete-files", action="store_true",
                        help="also delete its downloaded files (inside the data directory)")


def _add_interval_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--interval", type=float, default=1.0,
                        help="seconds between progress updates (default 1)")


# --- settings and client -------------------------------------------------------------------


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from the given flags (absent flags fall back to env, then defaults)."""
    flags = {name: getattr(args, name) for name in Settings.model_fields if hasattr(args, name)}
    try:
        return load_settings(getattr(args, "config", None), **flags)
    except SettingsError as exc:
        raise CliError(str(exc)) from None


def api_url(args: argparse.Namespace, settings: Settings) -> str:
    """--api-url, else JSOC_BULK_API_URL, else http://<host>:<port>/ (loopback for 0.0.0.0)."""
    explicit = getattr(args, "api_url", None) or os.environ.get(API_URL_ENV)
    if explicit:
        if not explicit.startswith(("http://", "https://")):
            raise CliError(f"--api-url must be an http(s) URL like http://127.0.0.1:8470/; "
                           f"got {explicit!r}")
        return explicit
    host = settings.host
    if host in ("0.0.0.0", "::", ""):  # listening everywhere: talk to it on loopback
        host = "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.port}/"


def make_client(args: argparse.Namespace) -> ApiClient:
    settings = settings_from_args(args)
    return ApiClient(api_url(args, settings), token=settings.token_value)


def make_job_client(args: argparse.Namespace) -> Client:
    """The Python client (jsoc_bulk.Client) on the same transport."""
    return Client.over(make_client(args))


# --- output ----------------------------------------------------------------------------------


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def _job_line(job: dict[str, Any]) -> str:
    spec = job.get("spec") or {}
    what = spec.get("recordset") or " ".join(
        str(spec[k]) for k in ("series", "start", "end") if spec.get(k))
    return f"{job['id']}  {job['state']:<21} prio {job['priority']:>3}  {what}"


def print_status(job: dict[str, Any]) -> None:
    """A readable multi-line job status."""
    print(status_line(job))
    for key in ("chunks", "exports", "files"):
        counts = {k: v for k, v in (job.get(key) or {}).items() if v}
        shown = ", ".join(f"{k} {v}" for k, v in counts.items()) or "none yet"
        print(f"  {key:<8} {shown}")
    print(f"  bytes    {human_bytes(job.get('bytes_done'))} of about "
          f"{human_bytes(job.get('bytes_total'))} "
          f"(planner estimate {human_bytes(job.get('est_bytes'))})")
    if job.get("recordset"):
        print(f"  records  {job['recordset']}")
    if exports_info(job):
        print(f"  staging  {exports_info(job)}")
    if job.get("download_dir"):
        print(f"  under    {job['download_dir']} (jsoc-bulk files {job['id']})")
    if job.get("error"):
        print(f"  error    {job['error']}")
    for event in job.get("recent_errors") or []:
        print(f"  {event['at']}  {event['kind']}: {event['message']}")


# --- commands --------------------------------------------------------------------------------


def _follow(client: ApiClient, job_id: str, interval: float) -> int:
    job = follow_job(lambda: client.get_job(job_id), interval=interval)
    where = where_line(client, job)
    if where:
        print(where)
    state = job.get("state", "")
    if state != JobState.SUCCEEDED:
        print(f"jsoc-bulk: job {job_id} ended {state}", file=sys.stderr)
    return FINAL_EXIT.get(state, EXIT_ERROR)


def cmd_submit(args: argparse.Namespace) -> int:
    try:
        body = spec_from_args(args)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    client = make_client(args)
    if args.dry_run:
        preview = client.preview(body)
        if args.json:
            _print_json(preview)
        else:
            print_preview(preview)
        return EXIT_OK
    job = client.submit(body, idempotency_key=args.idempotency_key)
    if args.json:
        _print_json(job)
    else:
        print(f"submitted job {job['id']} ({job['state']})")
    return _follow(client, job["id"], args.interval) if args.wait else EXIT_OK


def cmd_jobs(args: argparse.Namespace) -> int:
    page = make_client(args).list_jobs(state=args.state, limit=args.limit, offset=args.offset)
    if args.json:
        _print_json(page)
        return EXIT_OK
    for job in page["items"]:
        print(_job_line(job))
    if not page["items"]:
        print("no jobs" + (f" in state {args.state}" if args.state else ""))
    if page.get("next_offset") is not None:
        print(f"(more: --offset {page['next_offset']})")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    job = make_client(args).get_job(args.job_id)
    if args.json:
        _print_json(job)
    else:
        print_status(job)
    return EXIT_OK


def cmd_watch(args: argparse.Namespace) -> int:
    return _follow(make_client(args), args.job_id, args.interval)


def cmd_action(args: argparse.Namespace) -> int:
    job = make_client(args).action(args.job_id, args.command)
    if args.json:
        _print_json(job)
    else:
        print(f"job {job['id']} is {job['state']}")
    return EXIT_OK


def cmd_file_list(args: argparse.Namespace) -> int:
    return cmd_files(args, make_job_client(args))


def cmd_file_verify(args: argparse.Namespace) -> int:
    try:
        return cmd_verify(args, lambda: make_job_client(args))
    except ValueError as exc:
        raise CliError(str(exc)) from None


def cmd_delete(args: argparse.Namespace) -> int:
    result = make_client(args).delete_job(args.job_id, delete_files=args.delete_files)
    print(f"deleted job {result['id']} ({result['files_deleted']} file(s) removed)")
    for path in result.get("files_kept") or []:
        print(f"  kept {path} (not safely inside the data directory)")
    return EXIT_OK


def cmd_workers(args: argparse.Namespace) -> int:
    workers = make_client(args).workers()
    if args.json:
        _print_json(workers)
        return EXIT_OK
    for w in workers["items"]:
        state = "alive" if w["alive"] else ("stopped" if w["stopped_at"] else "stale")
        print(f"{w['id']}  {state:<7} {w['hostname']}:{w['pid']}  heartbeat {w['heartbeat_at']}"
              f"  holding {json.dumps(w['holding'] or {})}")
    if not workers["items"]:
        print("no workers have registered")
    return EXIT_OK


def cmd_db(args: argparse.Namespace) -> int:
    from service.db.migrate import MigrationError, upgrade

    settings = settings_from_args(args)
    try:
        upgrade(str(settings.database_url))
    except (MigrationError, OSError) as exc:
        raise CliError(f"database upgrade failed: {exc}") from None
    print(f"database {_redacted(str(settings.database_url))} is at the newest schema")
    return EXIT_OK


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


# --- the daemon --------------------------------------------------------------------------------


async def _prepare_database(url: str, upgrade: bool = False) -> None:
    """Migrate SQLite (or any database with ``upgrade``); otherwise insist it is up to date."""
    from service.db.migrate import is_up_to_date_async, upgrade_async

    if upgrade or url.startswith("sqlite"):
        await upgrade_async(url)
    elif not await is_up_to_date_async(url):
        raise CliError("the database schema is not up to date; run 'jsoc-bulk db upgrade' once "
                       "(with the same --database-url) before starting the service")


async def run_service(settings: Settings, *, api: bool = True, workers: bool = True,
                      db_upgrade: bool = False) -> None:
    """The daemon: the API and/or the worker stages on one repository until SIGINT/SIGTERM."""
    from service.api.admission import api_pool
    from service.api.app import serve_api
    from service.db.repo import Repo
    from service.worker import run_workers

    assert settings.database_url and settings.download_dir
    settings.download_dir.mkdir(parents=True, exist_ok=True)
    await _prepare_database(settings.database_url, db_upgrade)
    repo = Repo.from_url(settings.database_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks = []
    api_repo = repo.sibling(**api_pool()) if api and workers else repo  # own pool
    if api:
        tasks.append(asyncio.create_task(
            serve_api(settings, api_repo, stop, shares_loop=workers), name="api"))
    if workers:
        tasks.append(asyncio.create_task(run_workers(settings, repo, stop), name="workers"))
    if settings.metrics_port is not None:
        from service.api.ops import serve_ops

        tasks.append(asyncio.create_task(serve_ops(settings, repo, stop), name="ops"))
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        stop.set()  # one part ended (or failed): stop the other one too
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            task.result()
    finally:
        if api_repo is not repo:
            await api_repo.close()
        await repo.close()


def cmd_serve(args: argparse.Namespace) -> int:
    from service.ops.logs import setup_logging

    settings = settings_from_args(args)
    setup_logging(settings)
    try:
        asyncio.run(run_service(settings, api=not args.workers_only, workers=not args.api_only,
                                db_upgrade=args.db_upgrade))
    except OSError as exc:
        raise CliError(f"cannot serve on {settings.host}:{settings.port}: {exc.strerror or exc}"
                       ) from None
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "serve": cmd_serve, "submit": cmd_submit, "jobs": cmd_jobs, "status": cmd_status,
    "watch": cmd_watch, "delete": cmd_delete, "workers": cmd_workers, "db": cmd_db,
    "config": lambda args: cmd_config(args, settings_from_args),
    "health": lambda args: cmd_health(args, make_client(args)),
    "files": cmd_file_list, "verify": cmd_file_verify,
    **{action: cmd_action for action in ACTIONS},
}


def _fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    print(f"jsoc-bulk: error: {message}", file=sys.stderr)
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jsoc-bulk`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ApiError as exc:
        _fail(exc.detail)
    except CliError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: still one line, unless debugging
        if os.environ.get(DEBUG_ENV):
            raise
        _fail(f"unexpected {type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 for a traceback)")


if __name__ == "__main__":
    sys.exit(main())
