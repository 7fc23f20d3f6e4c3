"""Run folders: one folder per training run under a runs directory, holding its config, state, metric log,
checkpoints and per-epoch sample grids, all written crash-safely so that nothing saved is ever lost.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genlib.io import atomic_write_bytes, atomic_write_json, read_json, read_jsonl

RUNS_DIR_ENV = "GENLIB_RUNS_DIR"
RUN_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,95}$")
LIVE_STATES = ("queued", "running", "paused")
STATES = LIVE_STATES + ("finished", "stopped", "failed", "diverged", "interrupted")
HEARTBEAT_STALE_S = 20.0  # a live run whose worker has not written its state for this long is interrupted


def default_runs_dir() -> Path:
    return Path(os.environ.get(RUNS_DIR_ENV) or "runs")


def new_run_id(model_name: str) -> str:
    return f"{model_name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def check_run_id(run_id: str) -> str:
    """Refuse ids that could escape the runs directory (path traversal) or are not ours."""
    if not isinstance(run_id, str) or not RUN_ID_RE.match(run_id) or ".." in run_id:
        raise ValueError(f"{run_id!r} is not a valid run id (lower-case letters, digits, '.', '_' and '-').")
    return run_id


@dataclass(frozen=True)
class Run:
    """A handle on one run folder; every read goes to disk, so any process may hold one."""

    path: Path

    @property
    def id(self) -> str:
        return self.path.name

    # files
    @property
    def info_path(self) -> Path:
        return self.path / "run.json"

    @property
    def state_path(self) -> Path:
        return self.path / "state.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def control_path(self) -> Path:
        return self.path / "control.json"

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoints" / "last.safetensors"

    @property
    def snapshot_path(self) -> Path:
        """Weights only, refreshed every few seconds while training, for exploring a model as it learns."""
        return self.path / "checkpoints" / "snapshot.safetensors"

    @property
    def samples_dir(self) -> Path:
        return self.path / "samples"

    @property
    def live_png(self) -> Path:
        return self.path / "live.png"

    @property
    def log_path(self) -> Path:
        return self.path / "worker.log"

    # contents
    def info(self) -> dict[str, Any]:
        return read_json(self.info_path, {}) or {}

    def write_info(self, info: dict[str, Any]) -> None:
        atomic_write_json(self.info_path, info)

    def state(self) -> dict[str, Any]:
        return read_json(self.state_path, {}) or {}

    def write_state(self, **fields: Any) -> dict[str, Any]:
        """Merge `fields` into state.json (atomically) and stamp the heartbeat."""
        state = self.state()
        state.update(fields)
        state["updated"] = time.time()
        atomic_write_json(self.state_path, state)
        return state

    def control(self) -> dict[str, Any]:
        return read_json(self.control_path, {}) or {}

    def send(self, **fields: Any) -> None:
        """Ask the run's worker for something (command run/pause/stop, live knobs); it polls this file."""
        control = self.control()
        control.update(fields)
        control["seq"] = int(control.get("seq", 0)) + 1
        atomic_write_json(self.control_path, control)

    def metrics(self, offset: int = 0) -> tuple[list[dict], int]:
        return read_jsonl(self.metrics_path, offset)

    def epoch_grids(self) -> list[Path]:
        return sorted(self.samples_dir.glob("epoch-*.png"))

    def write_epoch_grid(self, epoch: int, png: bytes) -> None:
        atomic_write_bytes(self.samples_dir / f"epoch-{epoch:04d}.png", png)

    def effective_state(self) -> str:
        """The state, with a live state whose worker has gone silent reported as 'interrupted'."""
        state = self.state()
        name = state.get("state", "unknown")
        if name in LIVE_STATES and name != "queued":
            if time.time() - float(state.get("updated", 0)) > HEARTBEAT_STALE_S and not _pid_alive(state.get("pid")):
                return "interrupted"
        return name


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunStore:
    """The runs directory: create, find, list and delete run folders, never outside the directory."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else default_runs_dir()

    def ensure_writable(self) -> None:
        """Raise PermissionError/OSError with a clear message when runs cannot be saved here."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-test-{secrets.token_hex(4)}"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as e:
            raise OSError(f"Runs cannot be saved in {self.root.resolve()}: {e.strerror or e}. "
                          f"Set --runs-dir or ${RUNS_DIR_ENV} to a writable folder.") from e

    def create(self, info: dict[str, Any], run_id: str | None = None) -> Run:
        self.ensure_writable()
        run_id = check_run_id(run_id or new_run_id(info.get("model", "run")))
        path = self.root / run_id
        path.mkdir(parents=False, exist_ok=False)
        run = Run(path)
        run.write_info({**info, "id": run_id, "created": time.time()})
        run.write_state(state="queued", step=0, epoch=0, images=0, seconds=0.0)
        return run

    def get(self, run_id: str) -> Run:
        check_run_id(run_id)
        path = (self.root / run_id).resolve()
        if path.parent != self.root.resolve():
            raise ValueError(f"{run_id!r} is not inside the runs directory.")
        if not (path / "run.json").exists():
            raise FileNotFoundError(f"No run {run_id!r} in {self.root}.")
        return Run(path)

    def list(self) -> list[Run]:
        """Every run folder with a run.json, newest first."""
        if not self.root.is_dir():
            return []
        runs = [Run(p) for p in self.root.iterdir()
                if p.is_dir() and RUN_ID_RE.match(p.name) and (p / "run.json").exists()]
        return sorted(runs, key=lambda r: r.info().get("created", 0), reverse=True)

    def delete(self, run_id: str) -> None:
        run = self.get(run_id)
        shutil.rmtree(run.path)


def open_run(path_or_id: Path | str, store: RunStore | None = None) -> Run:
    """A Run from a folder path (as the CLI takes) or an id in `store`."""
    p = Path(path_or_id)
    if (p / "run.json").exists():
        return Run(p)
    return (store or RunStore()).get(str(path_or_id))
