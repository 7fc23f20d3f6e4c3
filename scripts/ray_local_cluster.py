"""A Ray cluster on this machine for tests and measurements: a head node that takes no jobs (`--num-cpus 0`) and
worker nodes of one CPU each, every one a `ray start --block` process on 127.0.0.1 with token authentication on.

Each node's processes carry a marker in their environment, so that a node can be killed as a machine dies (every
process of it at once, SIGKILL) and so that nothing the cluster started can outlive it unnoticed (`shutdown` returns
what was left).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

MARK_ENV = "GENLIB_RAY_TEST_NODE"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    """`start_head()`, `add_worker(name)`, `kill_node(name)`, `shutdown()`; `address` and `token` for the backend."""

    def __init__(self, token: str | None = None, *, health_check_ms: int = 1000) -> None:
        self.token = token or secrets.token_hex(16)
        self.tag = secrets.token_hex(4)
        self.temp = Path(tempfile.mkdtemp(prefix="genray-", dir="/tmp"))  # short: Ray's socket paths must fit
        self.gcs_port, self.dashboard_port, self.client_port = free_port(), free_port(), free_port()
        self.health_check_ms = health_check_ms
        self.procs: dict[str, subprocess.Popen] = {}
        self.ray = str(Path(sys.executable).parent / "ray")

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _env(self, node: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "GENLIB_RAY_"))}
        # a dead node is noticed after health_check_ms x 3 (Ray's default: 3 s x 5)
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token, RAY_USAGE_STATS_ENABLED="0",
                   RAY_health_check_period_ms=str(self.health_check_ms), RAY_health_check_failure_threshold="3",
                   RAY_health_check_timeout_ms=str(self.health_check_ms), **{MARK_ENV: f"{self.tag}-{node}"})
        return env

    def _start(self, node: str, args: list[str]) -> None:
        log = open(self.temp / f"{node}.log", "wb")
        self.procs[node] = subprocess.Popen([self.ray, "start", "--block", "--disable-usage-stats",
                                             "--node-ip-address=127.0.0.1", "--num-gpus=0", *args],
                                            env=self._env(node), stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()

    def start_head(self, timeout: float = 180.0) -> float:
        """Start the head (no CPUs: it runs no job); returns the seconds until its job API answered."""
        t0 = time.monotonic()
        self._start("head", ["--head", f"--port={self.gcs_port}", "--num-cpus=0", "--include-dashboard=true",
                             "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
                             f"--ray-client-server-port={self.client_port}", f"--temp-dir={self.temp / 'ray'}"])
        self._wait(lambda: self.api("/api/version")[0] == 200, timeout, "the head node's job API", "head")
        return time.monotonic() - t0

    def add_worker(self, node: str, timeout: float = 180.0) -> float:
        """Start a worker node of one CPU; returns the seconds until the cluster listed it alive."""
        t0 = time.monotonic()
        before = {n["node_id"] for n in self.worker_nodes()}
        self._start(node, [f"--address=127.0.0.1:{self.gcs_port}", "--num-cpus=1"])
        self._wait(lambda: any(n["node_id"] not in before for n in self.worker_nodes()), timeout,
                   f"worker node {node}", node)
        return time.monotonic() - t0

    def _wait(self, ok: Any, timeout: float, what: str, node: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs[node].poll() is not None:
                raise RuntimeError(f"{what} exited: {self.log(node)[-2000:]}")
            try:
                if ok():
                    return
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.5)
        raise TimeoutError(f"{what} not up within {timeout:.0f} s: {self.log(node)[-2000:]}")

    def log(self, node: str) -> str:
        try:
            return (self.temp / f"{node}.log").read_text(errors="replace")
        except OSError:
            return ""

    def api(self, path: str, token: str | None = "default") -> tuple[int, str]:
        """GET `path` of the head's dashboard with the cluster's token (or `token`, None for none): (status, body)."""
        token = self.token if token == "default" else token
        request = urllib.request.Request(self.address + path)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                return r.status, r.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def worker_nodes(self) -> list[dict[str, Any]]:
        """The alive nodes that are not the head, as Ray's state API lists them."""
        status, body = self.api("/api/v0/nodes")
        if status != 200:
            return []
        nodes = json.loads(body)["data"]["result"]["result"]
        return [n for n in nodes if n["state"] == "ALIVE" and not n["is_head_node"]]

    def marked(self, node: str | None = None) -> list[Any]:
        """Every process this cluster started (or of one node), found by its environment marker."""
        import psutil

        want = f"{self.tag}-{node}" if node else None
        out = []
        for p in psutil.process_iter():
            try:
                mark = p.environ().get(MARK_ENV, "")
            except (psutil.Error, OSError):
                continue
            if (mark == want) if want else mark.startswith(f"{self.tag}-"):
                out.append(p)
        return out

    def kill_node(self, node: str) -> int:
        """The machine dies: SIGKILL to every process of `node` at once; returns how many there were."""
        import psutil

        procs = self.marked(node)
        for p in procs:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(procs, timeout=10)
        self.procs.pop(node, None)
        return len(procs)

    def shutdown(self, timeout: float = 60.0) -> list[str]:
        """Stop every node as `ray stop` would (SIGTERM to each `ray start --block`, workers first); returns the
        processes still there afterwards (then killed, so nothing is left either way)."""
        import psutil

        for node in sorted(self.procs, key=lambda n: n == "head"):
            proc = self.procs[node]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
        deadline = time.monotonic() + 20  # Ray's own reapers finish within seconds
        left = self.marked()
        while left and time.monotonic() < deadline:
            time.sleep(0.5)
            left = self.marked()
        described = []
        for p in left:
            try:
                described.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
                p.kill()
            except psutil.Error:
                pass
        shutil.rmtree(self.temp, ignore_errors=True)
        return described
