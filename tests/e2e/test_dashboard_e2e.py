"""The dashboard in a real headless browser (Debian's chromium through selenium and
chromium-driver) against the real daemon process and the emulator: the page shows a running
job progressing to ``succeeded``, and its Pause button pauses a job, also behind a token.

chromium and chromium-driver are installed by ``make browser`` (part of ``make test``); where
they cannot be installed, these tests skip and say so.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.procs import (
    EMAIL,
    FAST,
    Daemon,
    Proc,
    free_port,
    http_json,
    start_emulator,
    wait_for,
)

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed "
                                "(pip install -e '.[test]')")
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
SPEC = {"series": "hmi.M_720s", "start": "2014-01-01T00:00:00Z", "segments": ["magnetogram"]}
TOKEN = "dashboard-test-token-7f3a9c"
# The state and progress of one job's row on the jobs page, read in one go (no stale nodes).
ROW = """const row = document.querySelector(`tr.job[data-job-id="${arguments[0]}"]`);
if (!row) return null;
const bar = row.querySelector("progress");
return {state: row.dataset.state, pct: bar ? Number(bar.value) : null, text: row.innerText};"""


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless chromium driven by chromium-driver (both from Debian's packages)."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("chromium and chromium-driver are not installed: `make browser` installs "
                    "them with apt-get (needs root); the dashboard browser test needs both")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    try:
        driver = webdriver.Chrome(options=options,
                                  service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    except WebDriverException as exc:
        pytest.fail(f"chromium is installed but would not start under chromedriver: {exc.msg}")
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Callable[..., tuple[Daemon, str | None]]]:
    """Start the emulator (slow downloads) and the daemon on SQLite, optionally with a token."""
    started: list[Proc | Daemon] = []

    def start(bandwidth: str, token: str | None = None) -> tuple[Daemon, str | None]:
        port = free_port()  # known in advance: the daemon starts while the emulator does
        extra = [*FAST, "--shutdown-grace-seconds", "0.5", *(("--token", token) if token else ())]
        daemon = Daemon(tmp_path, f"http://127.0.0.1:{port}/", EMAIL, None, list(extra))
        started.append(daemon.start(wait=False))
        sim, _ = start_emulator(tmp_path, [EMAIL], "--port", str(port), "--staging-delay", "0.3",
                                "--bandwidth", bandwidth)
        started.append(sim)
        wait_for(lambda: http_json(daemon.api + "/health", token=token)["status"] == "ok", 60,
                 "the daemon's /health")
        return daemon, token

    yield start
    for proc in reversed(started):
        proc.stop()


def submit(daemon: Daemon, token: str | None, end: str) -> str:
    return http_json(daemon.api + "/jobs", "POST", {**SPEC, "end": end}, token=token)["id"]


def page_url(daemon: Daemon) -> str:
    return f"http://127.0.0.1:{daemon.port}/"


def test_jobs_page_shows_a_running_job_progress_to_succeeded(browser: Any, services) -> None:
    daemon, _ = services(bandwidth="24K")  # 6 files (both ends) of ~40 KiB: ~1.7 s each
    job_id = submit(daemon, None, "2014-01-01T01:00:00Z")
    browser.get(page_url(daemon))
    seen: list[dict[str, Any]] = []

    def finished() -> bool:
        row = browser.execute_script(ROW, job_id)
        if row is not None:
            seen.append(row)
        return row is not None and row["state"] == "succeeded"

    wait_for(finished, 90, "the page to show the job succeeded", interval=0.2)
    running = [r["pct"] for r in seen if r["state"] == "running" and 0 < r["pct"] < 100]
    assert len(set(running)) >= 2, f"no live progress while running: {seen}"
    assert running == sorted(running), running  # the bar only moves forward
    last = seen[-1]
    assert last["pct"] == 100 and "6 / 6 files" in last["text"], last
    assert http_json(f"{daemon.api}/jobs/{job_id}")["state"] == "succeeded"

    browser.find_element(By.CSS_SELECTOR, "nav a[data-nav=politeness]").click()
    emails = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "table.emails tr[data-name]"),
                      10, "the politeness page's emails")
    assert [(e.get_attribute("data-name"), e.find_element(By.CSS_SELECTOR, "td.num").text)
            for e in emails] == [(EMAIL, "0 / 1")]  # the job is done: no export pending
    browser.find_element(By.CSS_SELECTOR, "nav a[data-nav=workers]").click()
    workers = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "tr.worker"), 10,
                       "the workers page")
    assert [w.get_attribute("data-alive") for w in workers] == ["true"]


def test_pause_button_pauses_a_job_behind_the_token(browser: Any, services) -> None:
    daemon, token = services(bandwidth="8K", token=TOKEN)  # ~5 s per file: still running
    job_id = submit(daemon, token, "2014-01-01T02:00:00Z")
    browser.get(page_url(daemon))
    form = browser.find_element(By.ID, "token-form")
    wait_for(form.is_displayed, 20, "the page to ask for the token")
    assert not browser.find_elements(By.CSS_SELECTOR, "tr.job"), "data shown without the token"

    browser.get(f"{page_url(daemon)}#/jobs/{job_id}&token={TOKEN}")  # the fragment only
    assert wait_for(lambda: TOKEN not in browser.current_url, 10, "the token to leave the URL")
    pause = wait_for(lambda: browser.find_element(By.CSS_SELECTOR, "button.action-pause"), 10,
                     "the job's page")
    wait_for(lambda: http_json(f"{daemon.api}/jobs/{job_id}", token=token)["state"] == "running"
             and pause.is_displayed() and pause.is_enabled(), 60,
             "the job running and its Pause button enabled")
    request_ids = wait_for(lambda: [e.text for e in browser.find_elements(
        By.CSS_SELECTOR, "tr.export td.request-id") if e.text.startswith("JSOC_")], 30,
        "the job's JSOC request id on its page")
    assert all(re.fullmatch(r"JSOC_\d{8}_\d+", r) for r in request_ids), request_ids
    pause.click()

    wait_for(lambda: http_json(f"{daemon.api}/jobs/{job_id}", token=token)["state"] == "paused",
             20, "the API to report the job paused")
    wait_for(lambda: browser.find_element(By.CSS_SELECTOR, "h2 .state").text == "paused", 10,
             "the page to show the job paused")
    assert browser.find_element(By.CSS_SELECTOR, "button.action-resume").is_enabled()
    # paused: the file in flight (if any) finishes and the lane hands the others back, so the
    # job's files end up pending or done, none downloading (its export may also still be
    # staging when the job pauses: its rows then appear later, pending)
    def settled() -> bool:
        states = [f["state"] for f in http_json(f"{daemon.api}/jobs/{job_id}/files",
                                                 token=token)["items"]]
        return "pending" in states and "downloading" not in states
    wait_for(settled, 30, "the paused job's files pending, none downloading")
    Select(browser.find_element(By.ID, "file-state")).select_by_value("pending")
    wait_for(lambda: {r.get_attribute("data-state") for r in browser.find_elements(
        By.CSS_SELECTOR, "tr.file")} == {"pending"}, 10, "only pending files listed")

    browser.find_element(By.ID, "forget-token").click()  # then typed into the prompt
    wait_for(form.is_displayed, 10, "the page to ask for the token again")
    browser.find_element(By.ID, "token-input").send_keys(TOKEN + "\n")
    wait_for(lambda: not form.is_displayed() and browser.find_element(
        By.CSS_SELECTOR, "h2 .state").text == "paused", 10, "the job's page with the token")
    daemon.stop()
    assert daemon.proc is not None and TOKEN not in daemon.proc.log()
