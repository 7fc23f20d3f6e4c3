"""Two app servers on one runs folder behind nginx (deploy/nginx-genlib.conf, sticky by cookie), driven in two
Chromium contexts, one pinned to each server: a job started through one is paused, stopped and deleted through the
other; with one slot (GENLIB_MAX_JOBS=1) a job started through the second server waits in line while the first
holds the slot, and both servers show it queued (caps add up no more: genlib.jobs.admission).

Needs Debian's nginx (/usr/sbin/nginx): skipped without it, except where GENLIB_REQUIRE_NGINX=1 (CI, .ci/run).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(420)]

try:
    from playwright.sync_api import expect
except ImportError:  # conftest.py skips every test here (or, with GENLIB_REQUIRE_BROWSER=1, errors them)
    expect = None
else:
    expect.set_options(timeout=30_000)

from st_harness import nginx_path, start_app_servers, start_nginx, sticky_key, stop_server  # noqa: E402 (scripts/)
from st_pages import by_key, open_page  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
APP_TIMEOUT_MS = 60_000
START_TIMEOUT_MS = 150_000  # a worker's start (torch import) and its first state, on a busy 2-core CPU


@pytest.fixture(scope="module")
def two_servers(tmp_path_factory):
    if nginx_path() is None:
        if os.environ.get("GENLIB_REQUIRE_NGINX", "") not in ("", "0", "false", "no"):
            pytest.fail("GENLIB_REQUIRE_NGINX=1 but nginx is not installed (apt-get install nginx)")
        pytest.skip("nginx not found: apt-get install nginx")
    base = tmp_path_factory.mktemp("two-servers")
    (base / "runs").mkdir()
    (base / "data").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "GENLIB_TEACHER_TOKEN"}
    env.update(GENLIB_RUNS_DIR=str(base / "runs"), GENLIB_DATA_ROOT=str(base / "data"), GENLIB_JOB_BACKEND="process",
               GENLIB_MAX_JOBS="1", GENLIB_STANDBY_WORKER="0", GENLIB_PRETRAINED_DIR="none", PYTHONUNBUFFERED="1")
    servers = start_app_servers(2, env, base, ROOT)
    ports = [port for _, _, port in servers]
    try:
        nginx, url, nginx_log = start_nginx(base, ports)
        try:
            yield {"url": url, "ports": ports, "runs": base / "runs"}
        finally:
            stop_server(nginx, nginx_log)
    finally:
        stop_runs(base / "runs")
        for proc, log, _ in servers:
            stop_server(proc, log)


def stop_runs(runs: Path, timeout: float = 60.0) -> None:
    """Stop every live run of the folder and wait for its worker (they run in their own sessions)."""
    import time

    from genlib.runs.store import LIVE_STATES, RunStore

    live = [r for r in RunStore(runs).list() if r.effective_state() in LIVE_STATES]
    for run in live:
        run.send(command="stop")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(r.effective_state() in LIVE_STATES for r in live):
        time.sleep(0.2)


def pinned_context(browser, url: str, port: int):
    """A browser context whose cookie makes the proxy send it to the app server on `port`."""
    key = sticky_key(url, port)
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    ctx.set_default_timeout(30_000)
    ctx.add_cookies([{"name": "genlib_backend", "value": key, "url": url}])
    return ctx


def selected(page, key: str):
    return by_key(page, key).get_by_role("combobox")


def start_vae(page, url: str) -> str:
    open_page(page, url + "/vae")
    if not by_key(page, "vae-form-hidden").locator("input").is_visible():  # a run is selected: the form is folded
        page.get_by_test_id("stExpander").filter(has_text="Train a new").locator("summary").click()
    for field, value in (("hidden", "32"), ("latent", "2"), ("epochs", "300")):
        box = by_key(page, f"vae-form-{field}").locator("input")
        box.fill(value)
        box.press("Tab")
    by_key(page, "vae-form-submit").get_by_role("button").click()
    page.wait_for_url(re.compile(r"[?&]run=vae-"), timeout=APP_TIMEOUT_MS)
    return re.search(r"[?&]run=(vae-[a-z0-9-]+)", page.url).group(1)


def shows(page, run_id: str, state: str, timeout: int = APP_TIMEOUT_MS) -> None:
    expect(selected(page, "vae-run-select")).to_have_value(re.compile(rf"^{run_id} · {state}"), timeout=timeout)


def test_a_job_started_through_one_server_is_run_through_the_other(browser, two_servers):
    from genlib.runs.store import RunStore

    url, (port_a, port_b) = two_servers["url"], two_servers["ports"]
    ctx_a, ctx_b = pinned_context(browser, url, port_a), pinned_context(browser, url, port_b)
    try:
        a, b = ctx_a.new_page(), ctx_b.new_page()
        first = start_vae(a, url)  # through server A
        response = b.goto(f"{url}/vae?run={first}", wait_until="domcontentloaded")
        assert response.headers["x-genlib-upstream"].endswith(f":{port_b}")  # B really is the other server
        open_page(b, f"{url}/vae?run={first}")
        shows(b, first, "running", START_TIMEOUT_MS)

        by_key(b, f"pause-{first}").get_by_role("button").click()  # paused through B
        shows(b, first, "paused")
        shows(a, first, "paused")

        second = start_vae(b, url)  # through B, while A's job holds the only slot (paused still holds it)
        shows(b, second, "queued")
        open_page(a, f"{url}/vae?run={second}")
        shows(a, second, "queued")  # A sees B's queued run as queued (not interrupted)
        store = RunStore(two_servers["runs"])
        assert store.get(second).state().get("pid") is None  # never started: the cap held across the servers

        open_page(b, f"{url}/vae?run={first}")
        by_key(b, f"stop-{first}").get_by_role("button").click()  # stopped through B
        shows(b, first, "stopped")
        open_page(a, f"{url}/vae?run={second}")
        shows(a, second, "running", START_TIMEOUT_MS)  # the slot passed to B's queued run
        by_key(a, f"stop-{second}").get_by_role("button").click()  # and A stops B's job
        shows(a, second, "stopped")

        open_page(b, f"{url}/runs?run={first}")  # deleted through B
        confirm = by_key(b, f"confirm-delete-{first}")
        confirm.locator("label").click()
        expect(confirm.get_by_role("checkbox")).to_be_checked()
        delete = by_key(b, "delete-run").get_by_role("button")
        expect(delete).to_be_enabled()
        delete.click()
        expect(b.get_by_test_id("stMain")).to_contain_text(f"Run {first} deleted.", timeout=APP_TIMEOUT_MS)
        assert not (two_servers["runs"] / first).exists()
        open_page(a, f"{url}/runs")  # A's list (from the shared folder) has B's deletion
        expect(a.get_by_test_id("stDataFrame").locator("table")).to_contain_text(second)
        expect(a.get_by_test_id("stMain")).not_to_contain_text(first)
    finally:
        ctx_a.close()
        ctx_b.close()
