"""The deployment files: docker-compose.yml validates (``docker compose config`` when the client
can run, else its structure is checked here, every command parsed with the program's own
argument parser and every JSOC_BULK_* variable checked against Settings), and the image's
entrypoint and commands run as real processes exactly as the image / compose would run them:
they serve, and exit 0 on SIGTERM (the exec-form entrypoint delivers it to jsoc-bulk itself)."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from jsocsim.__main__ import build_parser as jsocsim_parser
from service.cli import build_parser as cli_parser
from service.cli import settings_from_args
from service.db import migrate
from service.settings import CONFIG_ENV, Settings
from tests.databases import scratch_postgres_database
from tests.e2e.procs import Proc, free_port, http_json, wait_for

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENTRYPOINT_BIN = Path(sys.executable).parent  # where pip put the jsoc-bulk console script
ENV = {"JSOC_BULK_EMAIL": "ops@example.org", "JSOC_BULK_TOKEN": "t0ken-for-tests"}
EMULATOR_ENTRYPOINT = ["python", "-m", "jsocsim"]
SERVICE_KEYS = {"build", "image", "command", "entrypoint", "environment", "env_file", "volumes",
                "ports", "depends_on", "healthcheck", "deploy", "profiles", "restart",
                "stop_grace_period", "stop_signal", "init", "user", "working_dir", "networks",
                "expose", "labels", "logging", "pull_policy", "tmpfs", "extra_hosts"}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
DURATION = re.compile(r"(\d+(\.\d+)?(h|m|s|ms|us|ns))+")
VARIABLE = re.compile(r"\$(?:\$|\{(\w+)(?:(:?[-?+])([^}]*))?\}|(\w+))")


# --- reading the files --------------------------------------------------------------------


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable substitution: $$, $VAR, ${VAR}, ${VAR:-default}, ${VAR:?error}…"""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match[str]) -> str:
        if m[0] == "$$":
            return "$"
        name, op, arg = m[1] or m[4], m[2] or "", m[3] or ""
        given = env.get(name)
        present = given is not None and (given != "" or not op.startswith(":"))
        if op.endswith("?") and not present:
            raise AssertionError(f"compose needs ${name}: {arg}")
        if op.endswith("-"):
            return given if present else arg  # type: ignore[return-value]
        if op.endswith("+"):
            return arg if present else ""
        return given or ""
    return VARIABLE.sub(one, value)


def load_compose(env: dict[str, str] = ENV) -> dict[str, Any]:
    return interpolate(yaml.safe_load(COMPOSE.read_text()), env)


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(
        line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")))
    return [(parts[0].upper(), parts[1].strip() if len(parts) > 1 else "")
            for line in text.splitlines() if (parts := line.strip().split(None, 1))]


def exec_form(instructions: list[tuple[str, str]], name: str) -> list[str]:
    """The last ENTRYPOINT/CMD, which must be a JSON array (exec form)."""
    args = [a for i, a in instructions if i == name][-1]
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction, args in dockerfile():
        if instruction == "ENV":
            env.update(word.split("=", 1) for word in shlex.split(args))  # type: ignore[misc]
    return env


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse like the program would; a refusal fails the test with argparse's message."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return parser.parse_args(argv)
    except SystemExit:
        raise AssertionError(f"{parser.prog} refuses {argv}: {err.getvalue().strip()}") from None


def settings_env(env: dict[str, str]) -> list[str]:
    """JSOC_BULK_* names that are not Settings fields (nor the configuration file's)."""
    return [k for k in env if k.startswith("JSOC_BULK_") and k != CONFIG_ENV
            and k.removeprefix("JSOC_BULK_").lower() not in Settings.model_fields]


# --- compose structure --------------------------------------------------------------------


def compose_problems(doc: dict[str, Any]) -> list[str]:
    """What ``docker compose config`` would refuse (or what would break at ``up``)."""
    problems = [f"unknown top-level key {k}" for k in doc
                if k not in ("services", "volumes", "networks", "name") and not k.startswith("x-")]
    services, declared = doc["services"], set(doc.get("volumes") or {})
    for name, svc in services.items():
        problems += [f"{name}: unknown key {k}" for k in svc if k not in SERVICE_KEYS]
        if "image" not in svc and "build" not in svc:
            problems.append(f"{name}: neither image nor build")
        for mount in svc.get("volumes", []):
            source = mount.split(":")[0]
            if not source.startswith((".", "/", "~")) and source not in declared:
                problems.append(f"{name}: volume {source} is not declared")
        for target, dep in (svc.get("depends_on") or {}).items():
            if target not in services:
                problems.append(f"{name}: depends on unknown service {target}")
            elif dep.get("condition", "service_started") not in CONDITIONS:
                problems.append(f"{name}: bad condition {dep}")
            elif (dep.get("condition") == "service_healthy"
                  and "healthcheck" not in services[target]):
                problems.append(f"{name}: waits for {target} to be healthy; it has no healthcheck")
            elif services[target].get("profiles") and not svc.get("profiles"):
                problems.append(f"{name}: depends on {target}, which is only in a profile")
        check = svc.get("healthcheck")
        if check:
            test = check["test"]
            if isinstance(test, list) and test[0] not in ("CMD", "CMD-SHELL", "NONE"):
                problems.append(f"{name}: healthcheck test must start with CMD or CMD-SHELL")
            problems += [f"{name}: healthcheck {k}={check[k]!r} is not a duration"
                         for k in ("interval", "timeout", "start_period")
                         if k in check and not DURATION.fullmatch(str(check[k]))]
        for port in svc.get("ports", []):
            if not re.fullmatch(r"(\d+\.\d+\.\d+\.\d+:)?\d+:\d+", str(port)):
                problems.append(f"{name}: bad port mapping {port}")
        for key in ("command", "entrypoint"):
            if key in svc and not isinstance(svc[key], list):
                problems.append(f"{name}: {key} should be a list (exec form)")
    used = {m.split(":")[0] for s in services.values() for m in s.get("volumes", [])}
    problems += [f"volume {v} is declared but unused" for v in declared - used]
    return problems


def docker_compose_available() -> bool:
    try:
        return subprocess.run(["docker", "compose", "version"], capture_output=True,
                              timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def jsoc_bulk_services(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services running the image's own entrypoint (jsoc-bulk)."""
    return {n: s for n, s in doc["services"].items()
            if s.get("build") and "entrypoint" not in s}


def test_compose_file_validates() -> None:
    if docker_compose_available():
        done = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "--profile", "offline",
                               "config", "-q"], capture_output=True, text=True, timeout=60,
                              env={**os.environ, **ENV})
        assert done.returncode == 0, done.stderr
    doc = load_compose()
    assert compose_problems(doc) == []
    services = doc["services"]
    assert {"postgres", "api", "worker", "emulator"} <= set(services)
    assert services["emulator"]["profiles"] == ["offline"]
    assert all(not s.get("profiles") for n, s in services.items() if n != "emulator")
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["api"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    # Workers start once the API (the only one running --db-upgrade) has migrated.
    assert services["worker"]["depends_on"]["api"]["condition"] == "service_healthy"
    images = {s["image"] for s in jsoc_bulk_services(doc).values()} | {
        services["emulator"]["image"]}
    assert len(images) == 1 and all(s.get("build") for s in [*jsoc_bulk_services(doc).values(),
                                                              services["emulator"]])
    shared = [set(s["volumes"]) for s in jsoc_bulk_services(doc).values()]
    assert shared[0] == set.intersection(*shared) and shared[0], shared  # one download volume
    with pytest.raises(AssertionError, match="JSOC_BULK_TOKEN"):
        load_compose({"JSOC_BULK_EMAIL": "ops@example.org"})


def test_compose_checks_catch_mistakes() -> None:
    doc = load_compose()
    services = doc["services"]
    services["worker"]["volumes"] = ["files:/data"]
    services["worker"]["depends_on"] = {"apii": {"condition": "service_started"}}
    services["api"]["depends_on"]["postgres"]["condition"] = "service_ready"
    services["api"]["healthcheck"]["interval"] = "ten seconds"
    services["postgres"]["helthcheck"] = services["postgres"].pop("healthcheck")
    assert sorted(compose_problems(doc)) == sorted([
        "worker: volume files is not declared", "worker: depends on unknown service apii",
        "api: bad condition {'condition': 'service_ready'}",
        "api: healthcheck interval='ten seconds' is not a duration",
        "postgres: unknown key helthcheck"])
    with pytest.raises(AssertionError, match="unrecognized arguments: --worker-only"):
        parse(cli_parser(), ["serve", "--worker-only"])
    assert settings_env({"JSOC_BULK_LEASE_SECS": "5", "JSOC_BULK_LEASE_SECONDS": "5"}) == [
        "JSOC_BULK_LEASE_SECS"]


def test_compose_commands_and_environment_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = load_compose()
    for name, svc in jsoc_bulk_services(doc).items():
        env = {k: str(v) for k, v in svc["environment"].items()}
        assert settings_env(env) == [], f"{name}: not Settings fields"
        args = parse(cli_parser(), svc["command"])
        assert args.command == "serve", name
        for key in [k for k in os.environ if k.startswith("JSOC_BULK_")]:
            monkeypatch.delenv(key)
        env[CONFIG_ENV] = on_host(env[CONFIG_ENV], svc, Path("/nonexistent"))
        for key, value in {**dockerfile_env(), **env}.items():
            monkeypatch.setenv(key, value)
        settings = settings_from_args(args)  # exactly what the CLI validates at start-up
        grace = float(svc["stop_grace_period"].rstrip("s"))
        assert grace > settings.shutdown_grace_seconds, f"{name}: drain cut short by SIGKILL"
        if name == "api":
            assert args.api_only and args.db_upgrade
            assert settings.host == "0.0.0.0" and settings.token_value
            published = {int(p.split(":")[-1]) for p in svc["ports"]}
            assert published == {settings.port}
            healthcheck = " ".join(svc["healthcheck"]["test"])
            assert str(settings.port) in healthcheck and "JSOC_BULK_TOKEN" in healthcheck
        if name == "worker":
            assert args.workers_only and not args.db_upgrade
            # a worker has no API: its healthcheck asks the listener of metrics_port
            assert settings.metrics_port is not None
            assert "JSOC_BULK_METRICS_PORT" in " ".join(svc["healthcheck"]["test"])
    emulator = doc["services"]["emulator"]
    assert emulator["entrypoint"] == EMULATOR_ENTRYPOINT
    sim = parse(jsocsim_parser(), emulator["command"])
    assert sim.email == [ENV["JSOC_BULK_EMAIL"]]
    assert {int(p.split(":")[-1]) for p in emulator["ports"]} == {sim.port}
    assert any(str(sim.data_dir).startswith(m.split(":")[1]) for m in emulator["volumes"])


def test_readme_describes_the_compose_setup() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Several workers", 1)[1].split("\n## ", 1)[0]
    doc = load_compose()
    sim = parse(jsocsim_parser(), doc["services"]["emulator"]["command"])
    for needed in ("serve --workers-only", "--lease-seconds", "/api/v1/workers",
                   f"--profile {doc['services']['emulator']['profiles'][0]}",
                   f"JSOC_BULK_JSOC_URL=http://emulator:{sim.port}/", "docker compose up"):
        assert needed in section, needed


def test_dockerfile_is_slim_non_root_exec_form() -> None:
    instructions = dockerfile()
    base = [a for i, a in instructions if i == "FROM"][-1]
    assert base.split()[0].endswith("-slim"), base
    names = [i for i, _ in instructions]
    user = [a for i, a in instructions if i == "USER"][-1]
    assert user not in ("root", "0") and not user.startswith("0:"), user
    assert names.index("USER") > max(n for n, i in enumerate(names) if i == "RUN")
    assert exec_form(instructions, "ENTRYPOINT") == ["jsoc-bulk"]
    assert parse(cli_parser(), exec_form(instructions, "CMD")).command == "serve"
    assert settings_env(dockerfile_env()) == []
    copied = {src for i, a in instructions if i == "COPY" for src in a.split()[:-1]}
    assert all((ROOT / src).exists() for src in copied), copied
    assert {"pyproject.toml", "README.md", "service", "jsocsim"} <= copied
    # A regular install: the wheel built from the copied sources carries the migrations
    # package the service applies (tests/test_packaging.py runs such an install).
    assert str(migrate.migrations_dir().relative_to(ROOT)) in copied
    # With the emulator's extra: docker-compose.yml runs jsocsim from the same image.
    install = next(a for i, a in instructions if i == "RUN" and "pip install" in a)
    assert re.search(r"""pip install (\.\[jsocsim\]|(["'])\.\[jsocsim\]\2)""", install), install


# --- the image's commands as real processes -----------------------------------------------


@pytest.fixture
def blank_postgres() -> Iterator[str]:
    with scratch_postgres_database() as url:
        yield url


def localized(argv: list[str], port: int, svc: dict[str, Any], tmp: Path) -> list[str]:
    """The container's command on this machine: loopback, a free port, volumes as dirs."""
    out = list(argv)
    for flag, value in (("--host", "127.0.0.1"), ("--port", str(port))):
        if flag in out:
            out[out.index(flag) + 1] = value
    if "--data-dir" in out:
        at = out.index("--data-dir") + 1
        out[at] = on_host(out[at], svc, tmp)
    return out


def on_host(path: str, svc: dict[str, Any], tmp: Path) -> str:
    """A container path under a named volume -> the same path under ``tmp/<volume>``; a
    bind-mounted file (``./deploy/…``) -> that file in this checkout."""
    for mount in svc["volumes"]:
        volume, target = mount.split(":")[:2]
        if volume.startswith(".") and path == target:
            return str(ROOT / volume)
        if path == target or path.startswith(target.rstrip("/") + "/"):
            return str(tmp / volume / path[len(target):].lstrip("/"))
    raise AssertionError(f"{path} is not on a volume of the service: {svc['volumes']}")


def run_image(argv: list[str], env: dict[str, str], log: Path) -> Proc:
    """``ENTRYPOINT + argv`` with the image's environment (no shell in between)."""
    entry = [str(ENTRYPOINT_BIN / "jsoc-bulk")]
    return Proc(entry + argv, log, env={**dockerfile_env(), **env}).start()


def healthy(proc: Proc, port: int, token: str) -> bool:
    if not proc.alive():
        raise RuntimeError(f"exited early:\n{proc.log()}")
    try:
        return http_json(f"http://127.0.0.1:{port}/api/v1/health", token=token)["status"] == "ok"
    except OSError:
        return False


def compose_healthcheck(test: list[str], port: int, env: dict[str, str] | None = None) -> int:
    """Run a compose healthcheck command here (the API's on ``port``); its exit code."""
    assert test[0] == "CMD"
    argv = [sys.executable if test[1] == "python" else test[1], *test[2:]]
    return subprocess.run(argv, env={"JSOC_BULK_PORT": str(port), **ENV, **(env or {})},
                          timeout=30, capture_output=True).returncode


def stop_cleanly(proc: Proc) -> None:
    proc.signal(signal.SIGTERM)
    assert proc.wait(30) == 0, proc.log()[-2000:]


@pytest.mark.e2e
def test_image_default_command_serves_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {**ENV, "JSOC_BULK_DATA_DIR": str(tmp_path / "data"), "JSOC_BULK_HOST": "127.0.0.1",
           "JSOC_BULK_PORT": str(port), "JSOC_BULK_JSOC_URL": f"http://127.0.0.1:{free_port()}/"}
    cmd = exec_form(dockerfile(), "CMD")
    proc = run_image(cmd, env, tmp_path / "image.log")
    try:
        wait_for(lambda: healthy(proc, port, ENV["JSOC_BULK_TOKEN"]), 60, "the image's /health")
        assert (tmp_path / "data" / "jsoc-bulk.db").is_file()  # SQLite in the data volume
        stop_cleanly(proc)
    finally:
        proc.stop()


def start_compose_emulator(svc: dict[str, Any], tmp: Path) -> tuple[Proc, str]:
    """The emulator service: its entrypoint and command (localized); returns its base URL."""
    port = free_port()
    argv = [sys.executable, *svc["entrypoint"][1:], *localized(svc["command"], port, svc, tmp)]
    assert svc["entrypoint"][0] == "python"
    proc = Proc(argv, tmp / "emulator.log").start()
    url = f"http://127.0.0.1:{port}/"
    wait_for(lambda: f"listening on {url}" in proc.log() or not proc.alive(), 60,
             "the emulator to listen")
    assert proc.alive(), proc.log()
    return proc, url


@pytest.mark.e2e
@pytest.mark.postgres
def test_composed_services_run_a_job_offline_and_stop_cleanly(tmp_path: Path,
                                                              blank_postgres: str) -> None:
    """emulator, api and worker with compose's commands and environment (Postgres, the shared
    data volume as one directory, the offline profile's JSOC URL): a job completes, then each
    exits 0 on SIGTERM."""
    services = load_compose()["services"]
    api_svc, worker_svc = services["api"], services["worker"]
    sim, jsoc = start_compose_emulator(services["emulator"], tmp_path)
    procs: list[Proc] = [sim]
    try:
        port, token = free_port(), ENV["JSOC_BULK_TOKEN"]
        env = {**{k: str(v) for k, v in api_svc["environment"].items()},
               "JSOC_BULK_DATABASE_URL": blank_postgres, "JSOC_BULK_JSOC_URL": jsoc,
               "JSOC_BULK_POLL_MIN": "0.2", "JSOC_BULK_HEARTBEAT_SECONDS": "0.5"}
        env["JSOC_BULK_DATA_DIR"] = on_host(env["JSOC_BULK_DATA_DIR"], api_svc, tmp_path)
        env[CONFIG_ENV] = on_host(env[CONFIG_ENV], api_svc, tmp_path)
        api = run_image(localized(api_svc["command"], port, api_svc, tmp_path), env,
                        tmp_path / "api.log")
        procs.append(api)
        wait_for(lambda: healthy(api, port, token), 60, "the API's /health")
        assert compose_healthcheck(api_svc["healthcheck"]["test"], port) == 0
        worker_env = {**env, "JSOC_BULK_DATA_DIR": on_host(
            str(worker_svc["environment"]["JSOC_BULK_DATA_DIR"]), worker_svc, tmp_path),
            "JSOC_BULK_METRICS_PORT": str(free_port())}  # compose's port, free here
        worker = run_image(localized(worker_svc["command"], port, worker_svc, tmp_path),
                           worker_env, tmp_path / "worker.log")
        procs.append(worker)
        api_url = f"http://127.0.0.1:{port}/api/v1"
        job = http_json(api_url + "/jobs", "POST", {
            "series": "hmi.M_720s", "start": "2014-01-01T00:00:00Z",
            "end": "2014-01-01T00:24:00Z", "segments": ["magnetogram"]}, token=token)
        final = wait_for(lambda: (j := http_json(f"{api_url}/jobs/{job['id']}", token=token))
                         ["state"] in ("succeeded", "failed", "completed_with_errors") and j,
                         90, "the job to end", interval=0.3)
        assert final["state"] == "succeeded" and final["files"]["done"] == 3, final  # 00:00-00:24
        fits = list(Path(env["JSOC_BULK_DATA_DIR"], "files").rglob("*.fits"))
        assert len(fits) == 3, fits  # in the volume the API and the worker share
        listed = http_json(api_url + "/workers", token=token)["items"]
        assert [(w["pid"], w["alive"]) for w in listed] == [(worker.popen.pid, True)]  # type: ignore[union-attr]
        assert compose_healthcheck(worker_svc["healthcheck"]["test"], port, worker_env) == 0
        stop_cleanly(worker)
        assert http_json(api_url + "/workers", token=token)["items"][0]["stopped_at"]
        stop_cleanly(api)
        assert compose_healthcheck(api_svc["healthcheck"]["test"], port) != 0
        stop_cleanly(sim)
    finally:
        for proc in reversed(procs):
            proc.stop()
