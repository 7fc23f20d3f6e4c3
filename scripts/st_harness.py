"""What the browser tests (tests/browser/conftest.py) and the load test (scripts/load_test.py) share to drive the
dashboard: a free local port, the `streamlit run app.py` command line, waiting for /_stcore/health, and Debian's
Chromium launched by Playwright (never a Playwright download).

Import it from the scripts folder (`sys.path.append(<repo>/scripts)`); it imports neither Playwright nor Streamlit.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Any

# headless Chromium in a container: no sandbox (no user namespaces), no GPU, no background traffic (no network here)
CHROMIUM_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run")


def chromium_path() -> str | None:
    """Debian's Chromium: /usr/bin/chromium, else `chromium` on PATH; $GENLIB_CHROMIUM, when set, is the only
    candidate (a path or a command name)."""
    override = os.environ.get("GENLIB_CHROMIUM")
    if override:
        return override if os.path.isfile(override) and os.access(override, os.X_OK) else shutil.which(override)
    if os.path.isfile("/usr/bin/chromium") and os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    return shutil.which("chromium")


def launch_chromium(playwright: Any) -> Any:
    """`playwright.chromium.launch(...)` on Debian's Chromium with CHROMIUM_ARGS; works with the sync API (returns
    the Browser) and the async one (returns the awaitable). RuntimeError when there is no Chromium."""
    path = chromium_path()
    if path is None:
        raise RuntimeError("Chromium not found (/usr/bin/chromium or `chromium` on PATH): install Debian's chromium "
                           "package or set GENLIB_CHROMIUM")
    return playwright.chromium.launch(executable_path=path, args=list(CHROMIUM_ARGS))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def streamlit_command(port: int, app: str = "app.py") -> list[str]:
    """`python -m streamlit run <app>` headless on 127.0.0.1:<port>, without the file watcher or usage stats."""
    return [sys.executable, "-m", "streamlit", "run", app, "--server.headless", "true",
            "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false",
            "--server.port", str(port), "--server.address", "127.0.0.1"]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    """Return once `url`/_stcore/health answers 'ok'; RuntimeError if the server exits, TimeoutError after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {proc.returncode} before it was healthy")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().decode().strip() == "ok":
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{url}/_stcore/health did not answer 'ok' within {timeout:.0f} s")


def stop_server(proc: subprocess.Popen, log: Any = None) -> None:
    """Terminate a server started with streamlit_command (kill it after 20 s), then close its log file."""
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
    if log is not None:
        log.close()
