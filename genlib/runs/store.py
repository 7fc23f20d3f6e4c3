"""Run folders: one folder per training run under a runs directory, holding its config, state, metric log,
checkpoints and per-epoch sample grids, all written crash-safely so that nothing saved is ever lost.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import secrets
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genlib.runs import ownership
from genlib.runs.io import atomic_write_bytes, read_jsonl
from genlib.settings import NODE_ENV, RUNS_DIR_ENV, current as current_settings
from genlib.runs.schema import (LIVE_STATES, STATES, ControlRecord, QualityRecord, QualityStatus, RunRecord,
                                SchemaError, StateRecord, UploadOrigin, update_control, update_state)

RUN_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,95}$")
HEARTBEAT_STALE_S = 20.0  # a live run whose worker has not written its state for this long is interrupted
HEARTBEAT_DEAD_S = 600.0  # ...even when its pid is alive (reused by another process): a worker beats every 2 s
QUEUE_STALE_S = 60.0  # a queued run's place not rewritten for this long (genlib.jobs.admission) has no server
EVALUATION_STALE_S = 300.0  # a 'running' evaluation status not refreshed for this long belongs to one that died
MAX_IMPORT_BYTES = 50 * 2**20  # an uploaded checkpoint larger than this is refused (the server's maxUploadSize)


def default_runs_dir() -> Path:
    return current_settings().runs_dir


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

    @property
    def owner_lock_path(self) -> Path:
        """flock'd by the one process that trains (or deletes) the run, for its whole life (genlib.runs.ownership)."""
        return self.path / ownership.LOCK_NAME

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

    # contents: each file read and written through its record in genlib.runs.schema
    def record(self) -> RunRecord:
        """run.json as a RunRecord (migrated when old); SchemaError naming the fault, FileNotFoundError when absent."""
        return RunRecord.load(self.info_path)

    def info(self) -> dict[str, Any]:
        """run.json as a dict in the current schema (forked_from / uploaded_from / sweep, never the old parent);
        {} while the folder is being made or deleted. SchemaError when the file is not a genlib run's."""
        try:
            return self.record().to_dict()
        except FileNotFoundError:
            return {}

    def write_info(self, info: RunRecord | dict[str, Any]) -> None:
        record = info if isinstance(info, RunRecord) else RunRecord.from_dict(info, where=str(self.info_path))
        record.save(self.info_path)

    def dataset(self) -> str:
        """The dataset this run trains on (RunRecord.resolved_dataset): run.json's, else its training config's, else
        TrainConfig's default "mnist". Pages that cannot find it on this machine substitute the offline digits
        themselves, saying so (dashboard.explore.widgets.test_data): a run's dataset never silently changes."""
        return self.record().resolved_dataset

    def latest_weights(self) -> Path | None:
        """The run's newest weights: of the last checkpoint and the snapshot (weights only, refreshed while it
        trains), the one saved at the later training step; on a tie the checkpoint (complete, optimiser included).
        None when the run has neither yet.

        Why steps and not modification times: a copied folder (an installed pretrained run, a restored backup) keeps
        or resets mtimes but never steps, and a snapshot from before a resume or a fork must not win by being newer
        on disk. An unreadable header counts as step -1, so the other file wins (or the loader says what is wrong).
        """
        files = [p for p in (self.checkpoint_path, self.snapshot_path) if p.exists()]
        if not files:
            return None
        steps = {p: _saved_step(p) for p in files}
        return max(files, key=lambda p: (steps[p], p == self.checkpoint_path))

    def require_latest_weights(self) -> Path:
        """latest_weights() for a caller that needs weights (sample, evaluate): FileNotFoundError when none exist."""
        path = self.latest_weights()
        if path is None:
            raise FileNotFoundError(f"run {self.id} has no checkpoint yet")
        return path

    def state_record(self) -> StateRecord | None:
        """state.json as a StateRecord, None when absent; SchemaError when it is not a genlib state file."""
        try:
            return StateRecord.load(self.state_path)
        except FileNotFoundError:
            return None

    def state(self) -> dict[str, Any]:
        record = self.state_record()
        return record.to_dict() if record is not None else {}

    def write_state(self, **fields: Any) -> dict[str, Any]:
        """Merge `fields` into state.json (under its lock, atomically) and stamp the heartbeat. A `pid` is stamped
        with this machine's host name (and $GENLIB_NODE_ID), so other machines never judge it by their own pids."""
        if fields.get("pid") is not None and "host" not in fields:
            fields.update(host=this_host(), node=current_settings().node_id)
        return update_state(self.state_path, **fields).to_dict()

    def control(self) -> dict[str, Any]:
        try:
            record = ControlRecord.load(self.control_path)
        except FileNotFoundError:
            return {}
        return record.to_dict()

    def send(self, **fields: Any) -> None:
        """Ask the run's worker for something (command run/pause/stop, live knobs); it polls this file. Locked
        read-modify-write: a Stop sent while another tab changes a knob is never lost."""
        update_control(self.control_path, **fields)

    def metrics(self, offset: int = 0) -> tuple[list[dict], int]:
        return read_jsonl(self.metrics_path, offset)

    def quality_records(self, offset: int = 0) -> tuple[list[dict], int]:
        """The quality evaluations recorded so far (oldest first) from byte `offset`, and the new offset."""
        return read_jsonl(self.quality_path, offset)

    def quality_summary(self) -> dict[str, Any] | None:
        """The last final or full evaluation's record (a QualityRecord's dict), or None."""
        try:
            return QualityRecord.load(self.quality_summary_path).to_dict()
        except FileNotFoundError:
            return None

    def quality_status(self) -> dict[str, Any]:
        """The progress of the last final/full evaluation: state running/done/failed/cancelled, fraction, message."""
        try:
            return QualityStatus.load(self.quality_status_path).to_dict()
        except FileNotFoundError:
            return {}

    def epoch_grids(self) -> list[Path]:
        return sorted(self.samples_dir.glob("epoch-*.png"))

    def write_epoch_grid(self, epoch: int, png: bytes) -> None:
        """Save epoch `epoch`'s grid; beyond genlib.work_budget's cap per run, older ones are thinned (spacing
        doubling, first and newest kept), so a run of thousands of epochs cannot fill the disk."""
        from genlib.work_budget import thin_epochs

        atomic_write_bytes(self.samples_dir / f"epoch-{epoch:04d}.png", png, within=self.path)
        grids = {int(p.stem[6:]): p for p in self.epoch_grids() if p.stem[6:].isdigit()}  # epoch-NNNN
        for e in thin_epochs(list(grids)):
            grids[e].unlink(missing_ok=True)

    # liveness: who owns this run now
    def effective_state(self) -> str:
        """The state, with a live state whose worker has gone silent reported as 'interrupted'.

        A worker's pid is trusted only on the machine that wrote it (state.json's host; a file without one was
        written here, before hosts were recorded): elsewhere, and for a worker thread, the heartbeat decides."""
        state = self.state_record()
        if state is None:
            return "unknown"
        if state.state in LIVE_STATES and state.state != "queued":
            if ownership.holder(self.path) is not None:  # its worker holds the owner lock: alive, however silent
                return state.state
            silent = time.time() - state.updated
            if state.pid is None or (state.pid == os.getpid() and _here(state.host)):
                alive = None  # a worker thread (of this process, or of a server that is gone): only silence tells
            else:
                alive = pid_alive(state.pid, state.host)  # None on another host: there the heartbeat decides
            gone = (alive is False) if alive is not None else silent > HEARTBEAT_STALE_S
            if gone or silent > HEARTBEAT_DEAD_S:
                return "interrupted"
        return state.state

    def owner(self) -> Owner | None:
        """The live process that owns this run (its worker, or the server that queued it), or None when nobody
        does and the run may be resumed. A queued run is owned while the server that queued it is alive here. The
        process holding the owner lock (genlib.runs.ownership) owns it whatever state.json says (it may not have
        written its state yet)."""
        holder = self.lock_holder()
        if holder is not None:
            return holder
        state = self.state_record()
        if state is None or state.state not in LIVE_STATES:
            return None
        if state.state == "queued":  # the server that queued it (genlib.jobs.admission's mark) while it lives
            mark = state.extra.get("queued_by") if isinstance(state.extra.get("queued_by"), dict) else {}
            pid, host = mark.get("pid"), mark.get("host")
            alive = pid_alive(pid, host) if pid is not None else False
            if alive is None:  # on another host: the queue rewrites its place every few seconds while it holds it
                alive = time.time() - state.updated < QUEUE_STALE_S
            if not alive:
                return None
            return Owner(pid=pid, host=host, node=None, what="the server that queued it")
        if self.effective_state() == "interrupted":
            return None
        return Owner(pid=state.pid, host=state.host, node=state.node, what=f"the {state.state} run's worker")

    def lock_holder(self) -> Owner | None:
        """The process holding the run folder's owner lock now (genlib.runs.ownership), or None."""
        who = ownership.holder(self.path)
        if who is None:
            return None
        pid = who.get("pid") if isinstance(who.get("pid"), int) else None
        return Owner(pid=pid, host=who.get("host"), node=who.get("node"), what=str(who.get("what") or "a worker"))

    def evaluation_owner(self) -> Owner | None:
        """The live evaluation of this run (a final/full one, genlib.quality.records), or None: its status says
        'running', its heartbeat is fresh, and its process is alive (checked on its own host only)."""
        try:
            status = QualityStatus.load(self.quality_status_path)
        except (FileNotFoundError, SchemaError):
            return None
        if status.state != "running" or time.time() - status.updated >= EVALUATION_STALE_S:
            return None
        if not (status.pid == os.getpid() and _here(status.host)) and pid_alive(status.pid, status.host) is False:
            return None
        return Owner(pid=status.pid, host=status.host, node=None, what=f"a {status.kind} evaluation")


@dataclass(frozen=True)
class Owner:
    """A process that holds a run: its pid on `host` (and cluster node), and what it is, for messages."""

    pid: int | None
    host: str | None
    node: str | None
    what: str

    def describe(self) -> str:
        where = f"host {self.host}" if self.host else "this machine"
        pid = f"pid {self.pid}" if self.pid is not None else "a thread"
        return f"{self.what} ({pid} on {where}{f', node {self.node}' if self.node else ''})"


def this_host() -> str:
    """The name state.json records with a pid (socket.gethostname())."""
    return socket.gethostname()


def _here(host: str | None) -> bool:
    return host is None or host == this_host()


def pid_alive(pid: Any, host: str | None = None) -> bool | None:
    """Whether process `pid` is alive: True or False when it ran on this machine (`host` None means a record from
    before hosts were recorded, taken as this machine), None when it ran on another host, where only a heartbeat
    can tell: a pid on another machine says nothing here."""
    if not _here(host):
        return None
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _saved_step(path: Path) -> int:
    """The training step a checkpoint or snapshot file was saved at (from its header), -1 when unreadable."""
    try:
        st = path.stat()
    except OSError:
        return -1
    return _saved_step_cached(str(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=256)
def _saved_step_cached(path: str, mtime_ns: int, size: int) -> int:
    from genlib.runs.checkpoints import read_header

    try:
        step = (read_header(path).get("progress") or {}).get("step", -1)
        return int(step) if isinstance(step, int) and not isinstance(step, bool) else -1
    except (OSError, ValueError):
        return -1


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

    def create(self, info: RunRecord | dict[str, Any], run_id: str | None = None) -> Run:
        """A new run folder holding `info` (a RunRecord, or its fields: checked before anything is written) and a
        queued state; its id is `run_id` or a fresh one."""
        record = info if isinstance(info, RunRecord) else RunRecord.from_dict(info, where="the new run's run.json")
        self.ensure_writable()
        run_id = check_run_id(run_id or new_run_id(record.model))
        path = self.root / run_id
        path.mkdir(parents=False, exist_ok=False)
        run = Run(path)
        try:
            run.write_info(dataclasses.replace(record, id=run_id, created=time.time()))
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
        runs = []
        for p in self.root.iterdir():  # no symlinks: a run folder never points elsewhere
            if p.is_dir() and not p.is_symlink() and RUN_ID_RE.match(p.name):
                try:
                    runs.append((Run(p).record().created, Run(p)))
                except (FileNotFoundError, SchemaError):  # not a run (or being deleted): `get` says what is wrong
                    continue
        return [run for _, run in sorted(runs, key=lambda cr: cr[0], reverse=True)]

    def delete(self, run_id: str) -> None:
        """Remove the run folder, holding its owner lock meanwhile: refused (ValueError naming the owner) while a
        worker owns it, and no worker can start on it while it goes."""
        run = self.get(run_id)
        with ownership.take(run.path, what="a delete of the run"):  # RunOwned (a ValueError) naming the owner
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
    model = model_from_checkpoint(ckpt, device="cpu")  # wrong model, wrong shapes -> CheckpointError
    if ckpt.training_state is not None:  # what Continue will load: refused now, with this message, not then
        try:
            model.configure_training(lr=0.001)
            model.load_training_state(ckpt.training_state)
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, RuntimeError) as e:
            why = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            raise CheckpointError(f"{where} holds a training state (optimiser, chains) that does not fit its "
                                  f"{ckpt.model_name.upper()}: {why}. Save it again with genlib.") from e
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
                        # where it came from, shown only: never a fork of a local run that happens to share the id
                        "uploaded_from": UploadOrigin(file=where, claimed_run_id=str(
                            (ckpt.extra or {}).get("run_id", ""))[:96]).to_dict()})
    try:
        atomic_write_bytes(run.checkpoint_path, data, within=run.path)
        run.write_state(state="stopped", step=step, epoch=epoch, images=images, seconds=seconds,
                        message=f"imported from {where} at step {step}")
    except OSError:
        shutil.rmtree(run.path, ignore_errors=True)
        raise
    return run
