"""How a job is started, watched and stopped: one small interface (`Launcher`) behind JobManager, so its queue and its
caps stay in one place whether a job is a worker process on this machine, a thread of the server, or a Ray job on a
cluster (genlib.jobs.ray_launcher, which imports Ray only when that backend is chosen; genlib.jobs.manager.make_launcher
picks one).

A job is one run folder and a kind: "train" (`python -m genlib worker RUN_DIR`) or "evaluate" (`python -m
genlib.quality.records RUN_DIR --kind K`). The run folder stays the protocol: a launcher only starts the process that
reads it, says whether it is still alive (and, when it ended without recording why, the reason), and can stop it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from genlib.runs.ownership import OWNED_EXIT, RunOwned
from genlib.runs.store import Run

KINDS = ("train", "evaluate")
BACKENDS = ("process", "thread", "ray")


@dataclass(frozen=True)
class Liveness:
    """What a launcher knows of one job: alive, or ended (with why, for when the run folder does not say)."""

    alive: bool
    reason: str | None = None  # why it ended: exit code or signal and the log's last line, or the cluster's message
    node: str | None = None  # where it runs, when the backend knows (a Ray node id)
    refused: bool = False  # it ended at once, writing nothing, because another process owns the run folder


class Launcher(Protocol):
    """Starts a job's process, reports its liveness, stops it. Not thread-safe: JobManager calls it under its lock."""

    name: str

    def start(self, run: Run, kind: str, *, quality: str = "full") -> Any:
        """Start `kind` on `run`'s folder; returns a handle. OSError/RuntimeError when nothing can be started."""

    def status(self, handle: Any) -> Liveness: ...

    def stop(self, handle: Any) -> None:
        """Ask the job to end now (SIGTERM or the cluster's stop); the run folder's Stop command is the gentle way."""

    def tend(self) -> None:
        """Called by the manager's monitor twice a second (the process backend keeps its standby worker here)."""

    def close(self) -> None: ...


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"a job's kind must be one of {KINDS}, got {kind!r}")
    return kind


def job_command(python: str, run_path: Path, kind: str, *, nice: int, quality: str = "full") -> list[str]:
    """The command line of a job, the same on every backend that starts a process."""
    if check_kind(kind) == "train":
        return [python, "-m", "genlib", "worker", str(run_path), "--nice", str(nice)]
    return [python, "-m", "genlib.quality.records", str(run_path), "--kind", quality, "--nice", str(nice)]


def log_path(run: Run, kind: str) -> Path:
    """Where a job's output goes: the training log, or the evaluation's own."""
    return run.log_path if check_kind(kind) == "train" else run.path / "quality.log"


def last_log_line(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - 2000))
            lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return None
    return lines[-1].strip()[:300] if lines else None


def exit_reason(code: int | None, log: Path | None) -> str:
    """Why a worker process ended without recording it: the signal or exit code, and the last line of its log."""
    if code is None:
        reason = "the training thread ended without recording a result"
    elif code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (the system may have run out of memory)" if name == "SIGKILL" else ""
        reason = f"the training worker was killed by {name}{hint}"
    else:
        reason = f"the training worker exited unexpectedly (code {code})"
    line = last_log_line(log) if log is not None else None
    return f"{reason}: {line}" if line else reason


@dataclass
class _Process:
    proc: subprocess.Popen
    log: Path


class ProcessLauncher:
    """Each job a worker process on this machine, in its own session, at a lower CPU priority (`nice`); training jobs
    may be handed to a standby worker started ahead of time (genlib.jobs.standby), which saves their imports."""

    name = "process"

    def __init__(self, python: str, nice: int = 0, *, standby: bool = False) -> None:
        from genlib.jobs.standby import Standby

        self.python, self.nice = python, nice
        self.standby = Standby(python, nice) if standby else None

    def start(self, run: Run, kind: str, *, quality: str = "full") -> _Process:
        log = log_path(run, kind)
        if kind == "train" and self.standby is not None:
            proc = self.standby.take(run.path)
            if proc is not None:
                return _Process(proc, log)
        with open(log, "ab") as out:
            proc = subprocess.Popen(job_command(self.python, run.path, kind, nice=self.nice, quality=quality),
                                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=dict(os.environ, PYTHONUNBUFFERED="1"), cwd=os.getcwd(),
                                    start_new_session=True)
        return _Process(proc, log)

    def status(self, handle: _Process) -> Liveness:
        code = handle.proc.poll()
        if code is None:
            return Liveness(alive=True)
        return Liveness(alive=False, reason=exit_reason(code, handle.log), refused=code == OWNED_EXIT)

    def stop(self, handle: _Process) -> None:
        if handle.proc.poll() is None:
            handle.proc.terminate()

    def tend(self) -> None:
        if self.standby is not None:
            self.standby.tend()

    def close(self) -> None:
        if self.standby is not None:
            self.standby.close()


class _Thread:
    def __init__(self, target: Any, name: str) -> None:
        self.error: str | None = None
        self.refused = False  # the job found its run folder owned by another process (RunOwned)
        self.thread = threading.Thread(target=self._main, args=(target,), name=name, daemon=True)

    def _main(self, target: Any) -> None:
        """The job records its own failures; whatever escapes it (a full disk while recording, SystemExit, a bug) is
        kept here, so the job shows as failed with that error, not as running forever."""
        try:
            target()
        except RunOwned as e:
            self.error, self.refused = str(e), True
        except BaseException as e:  # noqa: BLE001 - the thread ends here either way; the error must be seen
            self.error = f"{type(e).__name__}: {e}".strip().rstrip(":")


class ThreadLauncher:
    """Each job a thread of the server process (tests, and machines where a process per job costs too much)."""

    name = "thread"

    def start(self, run: Run, kind: str, *, quality: str = "full") -> _Thread:
        if check_kind(kind) == "train":
            from genlib.jobs.worker import run_job

            handle = _Thread(lambda: run_job(run), f"genlib-train-{run.id}")
        else:
            from genlib.quality.records import evaluate_saved_run
            from genlib.quality.settings import settings_for

            settings = settings_for(quality)
            handle = _Thread(lambda: evaluate_saved_run(run, settings), f"genlib-eval-{run.id}")
        handle.thread.start()
        return handle

    def status(self, handle: _Thread) -> Liveness:
        if handle.thread.is_alive():
            return Liveness(alive=True)
        return Liveness(alive=False, reason=handle.error or exit_reason(None, None), refused=handle.refused)

    def stop(self, handle: _Thread) -> None:
        """A thread cannot be killed: the run folder's Stop command is the only way (the manager sends it)."""

    def tend(self) -> None:
        pass

    def close(self) -> None:
        pass
