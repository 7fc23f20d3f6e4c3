"""What the browser tests (tests/browser/) and the load test (scripts/load_test.py) share to drive the dashboard: a
free local port, the `streamlit run serve.py` command line, waiting for /_stcore/health, Debian's Chromium launched by
Playwright (never a Playwright download), and Debian's nginx in front of several app servers with the shipped
deploy/nginx-genlib.conf (sticky by the `genlib_backend` cookie).

Import it from the scripts folder (`sys.path.append(<repo>/scripts)`); it imports neither Playwright nor Streamlit.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
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


def streamlit_command(port: int, app: str = "serve.py") -> list[str]:
    """`python -m streamlit run <app>` headless on 127.0.0.1:<port>, without the file watcher or usage stats; the
    default serve.py is app.py with the GAN grid route, as `make run` starts it."""
    return [sys.executable, "-m", "streamlit", "run", app, "--server.headless", "true",
            "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false",
            "--server.port", str(port), "--server.address", "127.0.0.1"]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    """Return once `url`/_stcore/health answers 'ok'; RuntimeError if the server exits, TimeoutError after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            what = "streamlit" if "streamlit" in [str(a) for a in proc.args] else Path(str(proc.args[0])).name
            raise RuntimeError(f"{what} exited with code {proc.returncode} before {url} was healthy")
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


def start_app_servers(n: int, env: dict[str, str], base: Path, cwd: Path, timeout: float = 120.0,
                      command: Any = streamlit_command) -> list[tuple[subprocess.Popen, Any, int]]:
    """n app servers (`command(port)`, by default streamlit_command) on free loopback ports, in `cwd` with `env`,
    each logging to base/streamlit-<k>.log; returns [(process, log file, port)] once every one is healthy (on a
    failure, stops those started and raises). Stop each with stop_server(process, log)."""
    servers: list[tuple[subprocess.Popen, Any, int]] = []
    try:
        for k in range(n):
            port = free_port()
            log = open(base / f"streamlit-{k}.log", "wb")
            servers.append((subprocess.Popen(command(port), cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL), log, port))
        for proc, _, port in servers:
            wait_healthy(f"http://127.0.0.1:{port}", proc, timeout)
    except BaseException:
        for proc, log, _ in servers:
            stop_server(proc, log)
        raise
    return servers


# ---- several app servers behind nginx (docs/cluster.md, "Two app servers and the proxy") ----

NGINX_CONF = Path(__file__).resolve().parents[1] / "deploy" / "nginx-genlib.conf"
STICKY_COOKIE = "genlib_backend"


def nginx_path() -> str | None:
    """Debian's nginx: `nginx` on PATH, else /usr/sbin/nginx (not on a normal user's PATH)."""
    return shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)


def render_nginx_conf(base: Path, listen: int, upstreams: list[int]) -> Path:
    """The shipped site config listening on 127.0.0.1:<listen> in front of 127.0.0.1:<upstreams>, inside a minimal
    main config that runs unprivileged with every file under `base`; returns the main config's path."""
    site = NGINX_CONF.read_text()
    site = re.sub(r"listen 80;", f"listen 127.0.0.1:{listen};", site)
    servers = "".join(f"    server 127.0.0.1:{p};\n" for p in upstreams)
    site, n = re.subn(r"(?:    server 127\.0\.0\.1:\d+;\n)+", servers, site)
    if n != 1:
        raise ValueError(f"{NGINX_CONF} no longer lists its app servers as consecutive `server 127.0.0.1:PORT;` "
                         "lines; update render_nginx_conf")
    (base / "site.conf").write_text(site)
    main = base / "nginx.conf"
    temps = " ".join(f"{k}_temp_path {base / k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    main.write_text(f"pid {base / 'nginx.pid'};\nerror_log {base / 'error.log'};\ndaemon off;\n"
                    f"events {{ worker_connections 1024; }}\n"
                    f"http {{ access_log off; {temps} include {base / 'site.conf'}; }}\n")
    return main


def start_nginx(base: Path, upstreams: list[int], timeout: float = 30.0) -> tuple[subprocess.Popen, str, Any]:
    """nginx on a free loopback port in front of the (already healthy) app servers on `upstreams`, its files and
    output under `base`; returns (process, proxy URL, log file) once the proxy answers /_stcore/health. Stop it with
    stop_server(process, log). RuntimeError without nginx."""
    path = nginx_path()
    if path is None:
        raise RuntimeError("nginx not found: apt-get install nginx")
    listen = free_port()
    conf = render_nginx_conf(base, listen, upstreams)
    log = open(base / "nginx.out", "wb")
    proc = subprocess.Popen([path, "-c", str(conf), "-p", str(base)], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{listen}"
    try:
        wait_healthy(url, proc, timeout)
    except BaseException:
        stop_server(proc, log)
        raise
    return proc, url, log


def upstream_of(url: str, key: str) -> str:
    """Which app server (host:port) the proxy at `url` sends a browser with cookie genlib_backend=<key> to (its
    X-Genlib-Upstream header)."""
    request = urllib.request.Request(url + "/_stcore/health", headers={"Cookie": f"{STICKY_COOKIE}={key}"})
    with urllib.request.urlopen(request, timeout=10) as r:
        return r.headers["X-Genlib-Upstream"]


def sticky_key(url: str, port: int, tries: int = 500) -> str:
    """A genlib_backend cookie value that the proxy at `url` sends to the app server on `port` (the hash is
    nginx's, so found by asking the proxy)."""
    for i in range(tries):
        if upstream_of(url, f"k{i}").endswith(f":{port}"):
            return f"k{i}"
    raise RuntimeError(f"no cookie key among {tries} tried reaches the app server on port {port} through {url}")
