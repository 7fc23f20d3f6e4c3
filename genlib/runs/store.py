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

from genlib.runs.io import atomic_write_bytes, atomic_write_json, read_json, read_jsonl

RUNS_DIR_ENV = "GENLIB_RUNS_DIR"
RUN_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,95}$")
LIVE_STATES = ("queued", "running", "paused")
STATES = LIVE_STATES + ("finished", "stopped", "failed", "diverged", "interrupted")
HEARTBEAT_STALE_S = 20.0  # a live run whose worker has not written its state for this long is interrupted
HEARTBEAT_DEAD_S = 600.0  # ...even when its pid is alive (reused by another process): a worker beats every 2 s
MAX_IMPORT_BYTES = 50 * 2**20  # an uploaded checkpoint larger than this is refused (the server's maxUploadSize)


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

    # quality evaluations (genlib.quality.evaluator): one JSON line per evaluation, the last final/full one, its progress
    @property
    def quality_path(self) -> Path:
        return self.path / "quality.jsonl"

    @property
    def quality_summary_path(self) -> Path:
        return self.path / "quality.json"

    @property
    def quality_status_path(self) -> Path:
        return self.path / "quality-status.json"

    @property
    def quality_cancel_path(self) -> Path:
        """Present while a cancel of the running final/full evaluation is requested."""
        return self.path / "quality.cancel"

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

    def quality_records(self, offset: int = 0) -> tuple[list[dict], int]:
        """The quality evaluations recorded so far (oldest first) from byte `offset`, and the new offset."""
        return read_jsonl(self.quality_path, offset)

    def quality_summary(self) -> dict[str, Any] | None:
        """The last final or full evaluation's record, or None."""
        return read_json(self.quality_summary_path, None)

    def quality_status(self) -> dict[str, Any]:
        """The progress of the last final/full evaluation: state running/done/failed/cancelled, fraction, message."""
        return read_json(self.quality_status_path, {}) or {}

    def epoch_grids(self) -> list[Path]:
        return sorted(self.samples_dir.glob("epoch-*.png"))

    def write_epoch_grid(self, epoch: int, png: bytes) -> None:
        atomic_write_bytes(self.samples_dir / f"epoch-{epoch:04d}.png", png)

    def effective_state(self) -> str:
        """The state, with a live state whose worker has gone silent reported as 'interrupted'."""
        state = self.state()
        name = state.get("state", "unknown")
        if name in LIVE_STATES and name != "queued":
            try:
                silent = time.time() - float(state.get("updated", 0) or 0)
            except (TypeError, ValueError):
                silent = float("inf")
            pid = state.get("pid")
            if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 and pid != os.getpid():
                gone = not _pid_alive(pid)  # a worker process on this machine: its pid says it all
            else:  # a worker thread (of this process, or of a server that is gone): only its silence tells
                gone = silent > HEARTBEAT_STALE_S
            if gone or silent > HEARTBEAT_DEAD_S:
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
        try:
            run.write_info({**info, "id": run_id, "created": time.time()})
            run.write_state(state="queued", step=0, epoch=0, images=0, seconds=0.0)
        except OSError as e:  # a full disk: leave no half-made folder behind, and say so plainly
            shutil.rmtree(path, ignore_errors=True)
            raise OSError(e.errno, f"Could not save a new run in {self.root.resolve()}: {e.strerror or e}. "
                                   "Free some disk space (or delete old runs) and try again.") from e
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
        runs = [Run(p) for p in self.root.iterdir()  # no symlinks: a run folder never points elsewhere
                if p.is_dir() and not p.is_symlink() and RUN_ID_RE.match(p.name) and (p / "run.json").exists()]
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


def import_checkpoint(store: RunStore, data: bytes, *, filename: str = "upload",
                      max_bytes: int = MAX_IMPORT_BYTES) -> Run:
    """A new run from uploaded checkpoint bytes, ready to explore and to continue ('stopped' at the file's step).

    Nothing in the file is ever executed: it must be a genlib safetensors checkpoint (pickles, truncated files,
    foreign safetensors are refused), of a model this server knows, whose weights fit its config, and whose training
    settings are valid. Raises CheckpointError (a ValueError) with what is wrong; writes nothing until all is checked.
    The file name is only shown, never used as a path.
    """
    import dataclasses

    from genlib.jobs.budget import check_fits
    from genlib.runs.checkpoints import CheckpointError, model_from_checkpoint, read_checkpoint
    from genlib.training import TrainConfig

    where = f"'{Path(str(filename)).name[:80]}'"
    if len(data) > max_bytes:
        raise CheckpointError(f"{where} is {len(data) / 2**20:.1f} MB, over the {max_bytes / 2**20:.0f} MB limit.")
    ckpt = read_checkpoint(data, device="cpu", where=where)
    try:  # sizes that would not fit are refused before the model is built
        check_fits(ckpt.model_name, ckpt.model_config, batch_size=1, device="cpu")
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where} describes a model this server refuses: {e}") from e
    model_from_checkpoint(ckpt, device="cpu")  # wrong model, wrong shapes -> CheckpointError
    tc = dict(ckpt.train_config or {})
    # settings that belong to the machine it was trained on, not to the model: this server chooses its own
    tc.update(device="auto", data_root=None, threads=None)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    try:
        train_config = dataclasses.asdict(TrainConfig(**{k: v for k, v in tc.items() if k in known}))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where} holds training settings this server refuses: {e}") from e
    try:
        progress = dict(ckpt.progress)
        step, epoch = int(progress.get("step", 0)), int(progress.get("epoch", 0) or 0)
        images, seconds = int(progress.get("images", 0) or 0), float(progress.get("seconds", 0.0) or 0.0)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where} has a damaged progress record ({e}).") from e
    if step < 0 or epoch < 0 or images < 0:
        raise CheckpointError(f"{where} has a negative step count.")
    run = store.create({"model": ckpt.model_name, "model_config": ckpt.model_config, "train_config": train_config,
                        "dataset": train_config["dataset"], "title": f"uploaded from {where}",
                        "parent": {"uploaded": where, "run_id": str((ckpt.extra or {}).get("run_id", ""))[:96]}})
    try:
        atomic_write_bytes(run.checkpoint_path, data)
        run.write_state(state="stopped", step=step, epoch=epoch, images=images, seconds=seconds,
                        message=f"imported from {where} at step {step}")
    except OSError:
        shutil.rmtree(run.path, ignore_errors=True)
        raise
    return run
