"""Real-browser fixtures: one `streamlit run serve.py` server (app.py with the grid route, as `make run` starts it)
per session on a free local port, one headless Chromium (Debian's, never a Playwright download), and tiny pre-trained
GAN and RBM runs for the explorers.

The server gets its own runs folder and an empty data root, so only the offline `digits` dataset exists and nothing
touches the network. Without Chromium (or the playwright package) every test here is skipped with the reason, unless
GENLIB_REQUIRE_BROWSER=1 (CI), where that is an error instead.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
SERVER_START_TIMEOUT_S = 90
PRETRAIN_TIMEOUT_S = 150

if str(ROOT / "scripts") not in sys.path:
    sys.path.append(str(ROOT / "scripts"))  # appended, so a script's name never shadows a module
from st_harness import (chromium_path, free_port, launch_chromium, stop_server,  # noqa: E402
                        streamlit_command, wait_healthy)


def _missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (pip install playwright)"
    if chromium_path() is None:
        return "Chromium not found (/usr/bin/chromium or `chromium` on PATH); install Debian's chromium package"
    return None


def _required() -> bool:
    return os.environ.get("GENLIB_REQUIRE_BROWSER", "") not in ("", "0", "false", "no")


def pytest_collection_modifyitems(config, items):
    """Mark every test of this folder `browser`; skip them (or, in CI, fail them) when there is no browser."""
    reason = _missing()
    for item in items:
        if HERE not in Path(str(item.fspath)).resolve().parents:
            continue
        item.add_marker(pytest.mark.browser)
        if reason and not _required():
            item.add_marker(pytest.mark.skip(reason=f"browser tests skipped: {reason}"))


# ---- the server ----

def stop_live_runs(runs_dir: Path, timeout: float = 30.0) -> None:
    """Ask every live run in the folder to stop and wait for its worker (process workers outlive the server: they
    run in their own session), so no training survives the tests."""
    from genlib.runs.store import LIVE_STATES, RunStore

    store = RunStore(runs_dir)
    live = [r for r in store.list() if r.effective_state() in LIVE_STATES]
    for run in live:
        try:
            run.send(command="stop")
        except OSError:
            pass
    deadline = time.monotonic() + timeout
    for run in live:
        while time.monotonic() < deadline and run.effective_state() in LIVE_STATES:
            time.sleep(0.2)
        pid = run.state().get("pid")
        if run.effective_state() in LIVE_STATES and isinstance(pid, int) and pid != os.getpid():
            try:  # it ignored the stop command: end that worker (it is ours: it trains in our tmp folder)
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass


@pytest.fixture(scope="session")
def browser_env(tmp_path_factory) -> dict[str, str]:
    """The environment of the server and of the pre-training: a fresh runs folder and an empty data root."""
    base = tmp_path_factory.mktemp("browser")
    (base / "runs").mkdir()
    (base / "data").mkdir()
    env = dict(os.environ, GENLIB_RUNS_DIR=str(base / "runs"), GENLIB_DATA_ROOT=str(base / "data"),
               GENLIB_JOB_BACKEND="process", GENLIB_MAX_JOBS="2", PYTHONUNBUFFERED="1",
               GENLIB_PRETRAINED_DIR="none")  # the shipped runs are tested in tests/test_pretrained.py
    env.pop("GENLIB_DEVICE", None)
    return env


@pytest.fixture(scope="session")
def pretrain(browser_env):
    """Tiny GAN and RBM runs trained in worker processes (started at once, in parallel with the server's start);
    returns a function that waits for them and gives {model: run_id}."""
    if _missing() and not _required():
        pytest.skip(f"browser tests skipped: {_missing()}")
    sys.path.insert(0, str(ROOT))
    old = {k: os.environ.get(k) for k in ("GENLIB_RUNS_DIR", "GENLIB_DATA_ROOT", "PYTHONPATH", "GENLIB_WORKER_EVALUATE")}
    os.environ.update({k: browser_env[k] for k in old if k in browser_env})  # the workers inherit them
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), old["PYTHONPATH"]) if p)
    os.environ["GENLIB_WORKER_EVALUATE"] = "cheap"  # the FINAL evaluation takes minutes on loaded cores
    from genlib.jobs.manager import JobManager
    from genlib.runs.store import RunStore

    mgr = JobManager(RunStore(browser_env["GENLIB_RUNS_DIR"]), backend="process", max_jobs=2)
    ids = {
        "gan": mgr.submit("gan", {"preset": "fast"},
                          {"dataset": "digits", "batch_size": 64, "lr": 2e-4, "epochs": 1, "max_steps": 15}),
        "rbm": mgr.submit("rbm", {"n_hidden": 64},
                          {"dataset": "digits", "batch_size": 64, "lr": 0.1, "epochs": 2}),
    }
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    done: dict[str, str] = {}

    def wait() -> dict[str, str]:
        for model, run_id in ids.items():
            if model not in done:
                status = mgr.wait(run_id, timeout=PRETRAIN_TIMEOUT_S)
                assert status.state == "finished", f"pre-training the {model} failed: {status.error or status.state}"
                done[model] = run_id
        return dict(done)

    yield wait
    mgr.close(stop_jobs=True, timeout=20)


@pytest.fixture(scope="session")
def app_url(browser_env, pretrain):
    """`streamlit run serve.py` on a free port; its URL once /_stcore/health says ok. Stopped (with every training
    job it started) at the end of the session."""
    port = free_port()
    cmd = streamlit_command(port)
    log_path = Path(browser_env["GENLIB_RUNS_DIR"]).parent / "streamlit.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=browser_env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, SERVER_START_TIMEOUT_S)
    except Exception:
        proc.kill()
        proc.wait(10)
        log.close()
        raise RuntimeError(f"the dashboard did not start; its log:\n{log_path.read_text(errors='replace')[-3000:]}")
    yield url
    try:
        stop_live_runs(Path(browser_env["GENLIB_RUNS_DIR"]))
    finally:
        stop_server(proc, log)


# ---- the browser ----

@pytest.fixture(scope="session")
def browser():
    reason = _missing()
    if reason:
        if _required():
            pytest.fail(f"GENLIB_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(f"browser tests skipped: {reason}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = launch_chromium(p)
        yield b
        b.close()


@pytest.fixture
def context(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    ctx.set_default_timeout(30_000)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context):
    return context.new_page()


@pytest.fixture(scope="session")
def screenshot_dir() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
