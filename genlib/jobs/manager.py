"""Background training jobs owned by the server, not by a browser session: a queue with a per-device concurrency
limit, each job a worker process (or a thread) running one run folder, controlled through that folder.

Pages poll run folders for state; no worker ever touches the UI. A worker process keeps the server's GIL free so
pages stay responsive while the CPU trains (measured: see README, "Threads or processes").
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genlib.runs.store import LIVE_STATES, Run, RunStore
from genlib.jobs.standby import Standby

BACKENDS = ("process", "thread")


def default_max_jobs(device_type: str) -> int:
    """Concurrent jobs per device: one per two CPU cores on the CPU, four on a GPU; $GENLIB_MAX_JOBS overrides."""
    env = os.environ.get("GENLIB_MAX_JOBS")
    if env:
        n = int(env)
        if n < 1:
            raise ValueError(f"GENLIB_MAX_JOBS must be at least 1, got {n}")
        return n
    if device_type == "cpu":
        return max(1, (os.cpu_count() or 2) // 2)
    return 4


@dataclass
class _Job:
    run: Run
    device: str
    handle: Any = None  # Popen or Thread
    started: float | None = None
    error: str | None = None  # what killed a worker thread, caught by its wrapper


@dataclass(frozen=True, kw_only=True)
class JobStatus:
    """A snapshot of one run as the UI shows it."""

    run_id: str
    model: str
    dataset: str
    state: str
    step: int
    total_steps: int | None
    epoch: int
    images_per_second: float | None
    eta_seconds: float | None
    message: str | None
    error: str | None
    queue_position: int | None
    metrics: dict[str, float]

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / self.total_steps) if self.total_steps else 0.0


class JobManager:
    """Starts, queues, pauses, resumes and stops training runs; thread-safe, one per server process."""

    def __init__(self, store: RunStore, *, backend: str = "process", max_jobs: int | None = None,
                 python: str | None = None, worker_nice: int = 0, standby: bool = False) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.store = store
        self.backend = backend
        self.max_jobs = max_jobs
        self.python = python or sys.executable
        if not 0 <= worker_nice <= 19:
            raise ValueError(f"worker_nice must be in 0..19 (a Unix niceness increment), got {worker_nice}")
        self.worker_nice = worker_nice  # process backend: how much lower the workers' CPU priority is
        # process backend: a worker started ahead of time takes the next job (genlib.jobs.standby), saving its imports
        self._standby = Standby(self.python, worker_nice) if standby and backend == "process" else None
        self._jobs: dict[str, _Job] = {}
        self._queue: list[str] = []
        self._lost: dict[str, tuple[str, str]] = {}  # run id -> (error, message) of failures the disk refused
        self._lock = threading.RLock()
        self._closed = threading.Event()
        self._monitor = threading.Thread(target=self._watch, name="genlib-job-monitor", daemon=True)
        self._monitor.start()

    # ---- commands ----
    def submit(self, model_name: str, model_config: dict[str, Any], train_config: dict[str, Any],
               *, title: str | None = None, parent: dict[str, Any] | None = None) -> str:
        """Create a run folder and queue it; returns the run id. Configs are validated before anything is written."""
        from genlib.models import make_config
        from genlib.training import TrainConfig

        from genlib.jobs.budget import check_fits
        from genlib.devices import resolve_device

        model_cfg = dataclasses.asdict(make_config(model_name, model_config))
        try:
            tc = TrainConfig(**train_config)
        except TypeError as e:  # an unknown or missing setting
            raise ValueError(f"training settings not understood: {e}") from e
        train_cfg = dataclasses.asdict(tc)
        check_fits(model_name, model_cfg, batch_size=tc.batch_size, precision=tc.precision, dataset=tc.dataset,
                   device=resolve_device(tc.device))
        run = self.store.create({"model": model_name, "model_config": model_cfg, "train_config": train_cfg,
                                 "dataset": train_cfg["dataset"], "title": title, "parent": parent})
        run.send(command="run", lr=train_cfg["lr"])
        self._enqueue(run, train_cfg["device"])
        return run.id

    def resume(self, run_id: str, *, epochs: int | None = None, max_steps: int | None = None) -> None:
        """Continue a finished, stopped, failed or interrupted run from its last checkpoint (optionally longer)."""
        from genlib.training import TrainConfig

        from genlib.runs.pretrained import refuse_if_pretrained

        run = self.store.get(run_id)
        refuse_if_pretrained(run, "resumed")
        self._finish_exiting(run)
        with self._lock:
            if run_id in self._jobs or (run.effective_state() in LIVE_STATES and run_id not in self._lost):
                raise ValueError(f"run {run_id} is already live; pause/resume it instead")
            info = run.info()
            tc = dict(info["train_config"])
            if epochs is not None:
                tc["epochs"] = epochs
            if max_steps is not None:
                tc["max_steps"] = max_steps
            info["train_config"] = dataclasses.asdict(TrainConfig(**tc))
            try:
                run.write_info(info)
                run.send(command="run")
                run.write_state(state="queued", message="waiting to resume", error=None)
            except OSError as e:  # a full disk: each write above is atomic, so what was saved stays as it was
                raise OSError(e.errno, f"Could not save to run {run_id}: {e.strerror or e}. Free some disk space "
                                       "and try again; what was saved is intact.") from e
            self._enqueue(run, info["train_config"]["device"])

    def pause(self, run_id: str) -> None:
        self.store.get(run_id).send(command="pause")

    def unpause(self, run_id: str) -> None:
        self.store.get(run_id).send(command="run")

    def stop(self, run_id: str) -> None:
        run = self.store.get(run_id)
        run.send(command="stop")
        with self._lock:
            if run_id in self._queue:  # never started: nothing to wait for
                self._queue.remove(run_id)
                self._jobs.pop(run_id, None)
                run.write_state(state="stopped", message="stopped before it started")

    def set_knobs(self, run_id: str, **knobs: Any) -> None:
        """Change live settings (lr, and model knobs) of a running job; the worker applies them within a second.
        ValueError for a setting the model has no live knob for, or a value it would refuse."""
        from genlib.runs.forks import check_knobs

        run = self.store.get(run_id)
        check_knobs(run.info().get("model", ""), knobs)
        run.send(**knobs)

    def fork(self, run_id: str, changes: dict[str, Any], *, checkpoint: str = "last",
             title: str | None = None) -> str:
        """Queue a new run that continues `run_id` from its checkpoint `checkpoint` with `changes` (see
        genlib.runs.forks.create_fork); returns the new run's id."""
        from genlib.runs.forks import create_fork

        run = create_fork(self.store, self.store.get(run_id), changes, checkpoint=checkpoint, title=title)
        self._enqueue(run, run.info()["train_config"]["device"])
        return run.id

    def delete(self, run_id: str) -> None:
        from genlib.runs.pretrained import refuse_if_pretrained

        refuse_if_pretrained(self.store.get(run_id), "deleted")
        with self._lock:
            if run_id in self._jobs:
                raise ValueError(f"run {run_id} is still training; stop it first")
            self.store.delete(run_id)

    # ---- queries ----
    def status(self, run_id: str) -> JobStatus:
        run = self.store.get(run_id)
        with self._lock:
            position = self._queue.index(run_id) + 1 if run_id in self._queue else None
            owned = run_id in self._jobs
            lost = self._lost.get(run_id)
        return _status(run, position, owned, lost)

    def statuses(self) -> list[JobStatus]:
        with self._lock:
            queue, owned, lost = list(self._queue), set(self._jobs), dict(self._lost)
        out = []
        for run in self.store.list():
            try:
                out.append(_status(run, queue.index(run.id) + 1 if run.id in queue else None, run.id in owned,
                                   lost.get(run.id)))
            except (OSError, ValueError, KeyError):
                continue  # a folder being deleted or written right now: skip it this time
        return out

    def active(self) -> list[JobStatus]:
        return [s for s in self.statuses() if s.live]

    # ---- machinery ----
    def _enqueue(self, run: Run, device: str) -> None:
        with self._lock:
            self._jobs[run.id] = _Job(run=run, device=_device_key(device))
            self._queue.append(run.id)
            self._lost.pop(run.id, None)
        self._schedule()

    def _limit(self, device_key: str) -> int:
        return self.max_jobs or default_max_jobs(device_key)

    def _schedule(self) -> None:
        with self._lock:
            for run_id in list(self._queue):
                job = self._jobs[run_id]
                running = sum(1 for j in self._jobs.values() if j.handle is not None and j.device == job.device)
                if running >= self._limit(job.device):
                    continue
                self._queue.remove(run_id)
                job.started = time.time()
                try:
                    job.handle = self._launch(job.run)
                except (OSError, RuntimeError) as e:  # no process or thread to be had: this job fails, alone
                    del self._jobs[run_id]
                    error = f"the training worker could not start: {type(e).__name__}: {e}"
                    try:
                        job.run.write_state(state="failed", error=error, message=error)
                    except OSError:
                        self._lost[run_id] = (error, error)

    def _launch(self, run: Run) -> Any:
        if self.backend == "thread":
            t = threading.Thread(target=self._thread_main, args=(run,), name=f"genlib-train-{run.id}", daemon=True)
            t.start()
            return t
        proc = self._standby.take(run.path) if self._standby is not None else None
        if proc is not None:
            return proc
        log = open(run.log_path, "ab")
        try:
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            return subprocess.Popen([self.python, "-m", "genlib", "worker", str(run.path),
                                     "--nice", str(self.worker_nice)],
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, cwd=os.getcwd(), start_new_session=True)
        finally:
            log.close()

    def _thread_main(self, run: Run) -> None:
        """A worker thread: run_job records its own failures; whatever escapes it (a full disk while recording,
        SystemExit, a bug) is kept here so the job shows as failed with that error, not as running forever."""
        from genlib.jobs.worker import run_job

        try:
            run_job(run)
        except BaseException as e:  # noqa: BLE001 - the thread ends here either way; the error must be seen
            with self._lock:
                job = self._jobs.get(run.id)
                if job is not None:
                    job.error = f"{type(e).__name__}: {e}".strip().rstrip(":")

    def _finish_exiting(self, run: Run, timeout: float = 15.0) -> None:
        """A worker that has written its final state may still be exiting: wait for it, then reap it."""
        with self._lock:
            job = self._jobs.get(run.id)
        if job is None or job.handle is None or run.state().get("state") in LIVE_STATES:
            return
        if isinstance(job.handle, threading.Thread):
            job.handle.join(timeout)
        else:
            try:
                job.handle.wait(timeout)
            except subprocess.TimeoutExpired:
                return
        self._reap()

    def _reap(self) -> None:
        with self._lock:
            for run_id, job in list(self._jobs.items()):
                h = job.handle
                if h is None:
                    continue
                alive = h.is_alive() if isinstance(h, threading.Thread) else h.poll() is None
                if alive:
                    continue
                del self._jobs[run_id]
                state = job.run.state()
                if state.get("state") in LIVE_STATES:  # the worker died without saying why
                    error = job.error or _exit_reason(h, job.run)
                    message = ("The training worker stopped unexpectedly; Continue training resumes from the last "
                               "checkpoint.")
                    try:
                        job.run.write_state(state="failed", error=error, message=message)
                    except OSError as e:  # a full disk: remember it here, so the page still says what happened
                        self._lost[run_id] = (f"{error}; the failure could not be recorded either "
                                              f"({e.strerror or e})", message)
        self._schedule()

    def _watch(self) -> None:
        while not self._closed.wait(0.5):
            try:
                self._reap()
                if self._standby is not None:
                    with self._lock:
                        if not self._closed.is_set():
                            self._standby.tend()
            except Exception:  # noqa: BLE001 - the monitor must outlive any single bad run folder
                continue

    def close(self, *, stop_jobs: bool = False, timeout: float = 10.0) -> None:
        """Stop the monitor; with stop_jobs, ask every job to stop and wait for them."""
        if stop_jobs:
            with self._lock:
                ids = list(self._jobs)
            for run_id in ids:
                self.stop(run_id)
            deadline = time.time() + timeout
            while time.time() < deadline:
                self._reap()
                with self._lock:
                    if not self._jobs:
                        break
                time.sleep(0.1)
        self._closed.set()
        if self._standby is not None:
            with self._lock:
                self._standby.close()

    def wait(self, run_id: str, timeout: float = 60.0) -> JobStatus:
        """Block until a run leaves the live states (for tests and scripts, never for pages)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            s = self.status(run_id)
            if not s.live:
                return s
            time.sleep(0.05)
        raise TimeoutError(f"run {run_id} still {self.status(run_id).state} after {timeout} s")


def _device_key(device: str) -> str:
    return "cpu" if device == "cpu" else ("cuda" if device.startswith("cuda") else device)


def _exit_reason(handle: Any, run: Run) -> str:
    """Why a worker ended without recording it: the signal or exit code, and the last line of its log."""
    import signal

    code = getattr(handle, "returncode", None)
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
    try:
        with open(run.log_path, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - 2000))
            lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
        if lines:
            reason += f": {lines[-1].strip()[:300]}"
    except OSError:
        pass
    return reason


def _status(run: Run, queue_position: int | None, owned: bool,
            lost: tuple[str, str] | None = None) -> JobStatus:
    info, state = run.info(), run.state()
    name = state.get("state", "unknown")
    if lost is not None and name in LIVE_STATES:  # it failed, but the disk would not take the record
        state = {**state, "error": lost[0], "message": lost[1]}
        name = "failed"
    elif not owned:
        name = run.effective_state()
        if name == "queued":  # queued by a server that is gone
            name = "interrupted"
    return JobStatus(run_id=run.id, model=info.get("model", "?"), dataset=info.get("dataset", "?"), state=name,
                     step=int(state.get("step", 0)), total_steps=state.get("total_steps"),
                     epoch=int(state.get("epoch", 0)), images_per_second=state.get("images_per_second"),
                     eta_seconds=state.get("eta_seconds"), message=state.get("message"), error=state.get("error"),
                     queue_position=queue_position, metrics=dict(state.get("metrics") or {}))


