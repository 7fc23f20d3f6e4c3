"""Background jobs owned by the server, not by a browser session: a queue with a per-device concurrency limit
(counted across every server on the runs folder: genlib.jobs.admission), each job a training run or an evaluation of
one run folder, controlled through that folder and started by a launcher (genlib.jobs.launchers: a worker process, a
thread, or a Ray job on a cluster).

Pages poll run folders for state; no worker ever touches the UI. A worker process keeps the server's GIL free so
pages stay responsive while the CPU trains (measured: docs/ui.md).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from genlib.jobs import admission
from genlib.jobs.launchers import BACKENDS, Launcher, ProcessLauncher, ThreadLauncher
from genlib.jobs.ray_launcher import RayLauncher, RaySettings  # Ray itself is imported only by RayLauncher()
from genlib.runs.schema import RunRecord, SweepMember
from genlib.runs.store import LIVE_STATES, Run, RunStore
from genlib.settings import current as current_settings


def default_max_jobs(device_type: str) -> int:
    """Concurrent jobs per device: one per two CPU cores on the CPU, four on a GPU; $GENLIB_MAX_JOBS overrides."""
    n = current_settings().max_jobs
    if n is not None:
        return n
    if device_type == "cpu":
        return max(1, (os.cpu_count() or 2) // 2)
    return 4


@dataclass
class _Job:
    run: Run
    device: str
    kind: str = "train"  # or "evaluate" (genlib.jobs.launchers.KINDS)
    quality: str = "full"  # an evaluation's settings (genlib.quality.settings.KINDS)
    handle: Any = None  # the launcher's handle, once started
    started: float | None = None
    place: int | None = None  # the place in line last written to the run folder, for the other servers
    place_written: float = 0.0


def _key(run_id: str, kind: str = "train") -> str:
    """A job's key in the queue: the run id for training, "<run id>:evaluate" for its evaluation."""
    return run_id if kind == "train" else f"{run_id}:{kind}"


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


def make_launcher(backend: str, *, python: str, nice: int = 0, standby: bool = False) -> Launcher:
    """The launcher of a backend name ($GENLIB_JOB_BACKEND); "ray" imports Ray, and reads its settings from the
    environment (genlib.jobs.ray_launcher.RaySettings). Here, above both launcher modules, so that the Ray launcher
    can use launchers.py's helpers without an import cycle."""
    if backend == "process":
        return ProcessLauncher(python, nice, standby=standby)
    if backend == "thread":
        return ThreadLauncher()
    if backend == "ray":
        return RayLauncher(RaySettings.from_env(python=python, nice=nice))
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


class JobManager:
    """Starts, queues, pauses, resumes and stops training runs; thread-safe, one per server process."""

    def __init__(self, store: RunStore, *, backend: str = "process", max_jobs: int | None = None,
                 python: str | None = None, worker_nice: int = 0, standby: bool = False,
                 launcher: Launcher | None = None) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.store = store
        self.backend = backend
        self.max_jobs = max_jobs
        self.python = python or sys.executable
        if not 0 <= worker_nice <= 19:
            raise ValueError(f"worker_nice must be in 0..19 (a Unix niceness increment), got {worker_nice}")
        self.worker_nice = worker_nice  # process and ray backends: how much lower the workers' CPU priority is
        # process backend: a worker started ahead of time takes the next job (genlib.jobs.standby), saving its imports
        self.launcher = launcher or make_launcher(backend, python=self.python, nice=worker_nice,
                                                  standby=standby and backend == "process")
        self._jobs: dict[str, _Job] = {}  # by _key: queued and started jobs of this server
        self._queue: list[str] = []
        self._lost: dict[str, tuple[str, str]] = {}  # run id -> (error, message) of failures the disk refused
        self._lock = threading.RLock()
        self._closed = threading.Event()
        self._monitor = threading.Thread(target=self._watch, name="genlib-job-monitor", daemon=True)
        self._monitor.start()

    @property
    def _standby(self) -> Any:
        """The process launcher's standby worker (genlib.jobs.standby), or None."""
        return getattr(self.launcher, "standby", None)

    # ---- commands ----
    def submit(self, model_name: str, model_config: dict[str, Any], train_config: dict[str, Any],
               *, title: str | None = None, sweep: dict[str, Any] | None = None) -> str:
        """Create a run folder and queue it; returns the run id. Configs are validated before anything is written.
        `sweep` marks one temperature of an Ising sweep (genlib.runs.schema.SweepMember's fields)."""
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
        run = self.store.create(RunRecord(model=model_name, model_config=model_cfg, train_config=train_cfg,
                                          dataset=train_cfg["dataset"], title=title,
                                          sweep=SweepMember.from_dict(sweep, "sweep") if sweep else None))
        run.send(command="run", lr=train_cfg["lr"])
        self._enqueue(run, train_cfg["device"])
        return run.id

    def resume(self, run_id: str, *, epochs: int | None = None, max_steps: int | None = None) -> None:
        """Continue a finished, stopped, failed or interrupted run from its last checkpoint (optionally longer:
        `epochs` and `max_steps` as genlib.runs.resume.resumed_train_config says). Refused while the run is live,
        pretrained, or being evaluated (the evaluation reads the checkpoint the worker would overwrite)."""
        from genlib.runs.pretrained import refuse_if_pretrained
        from genlib.runs.resume import resumed_train_config

        run = self.store.get(run_id)
        refuse_if_pretrained(run, "resumed")
        refuse_during_evaluation(run, "resumed")
        self._finish_exiting(run)
        with self._lock:
            holder = run.lock_holder()  # a worker (the CLI's too) owns it, perhaps before saying so in its state
            if run_id in self._jobs or holder is not None or (run.effective_state() in LIVE_STATES
                                                              and run_id not in self._lost):
                owner = holder or run.owner()
                raise ValueError(f"run {run_id} is already live" + (f", owned by {owner.describe()}" if owner else "")
                                 + "; pause/resume it instead")
            record = run.record()
            record = record.with_train_config(resumed_train_config(record.train_config, epochs=epochs,
                                                                   max_steps=max_steps))
            info = record.to_dict()
            try:
                run.write_info(record)
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
            elif run_id not in self._jobs:  # queued by another server on this runs folder: its queue drops it
                with admission.admission_lock(self.store.root):
                    state = run.state()
                    if state.get("state") == "queued" and not state.get("admitted"):
                        run.write_state(state="stopped", message="stopped before it started", queue_place=None)

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

    def evaluate(self, run_id: str, kind: str = "full") -> None:
        """Queue an evaluation of a saved run's checkpoint (genlib.quality.records): the same queue, caps and launcher
        as training, at the workers' priority; ValueError when one of this run is already queued or running (here,
        or on another server: its status file says so, read under the admission lock)."""
        from genlib.quality.records import evaluation_running
        from genlib.quality.settings import settings_for

        settings_for(kind)  # an unknown kind is refused here, not in a worker
        run = self.store.get(run_id)
        key = _key(run_id, "evaluate")
        with self._lock, admission.admission_lock(self.store.root):
            if key in self._jobs or evaluation_running(run):
                raise ValueError(f"an evaluation of run {run_id} is already queued or running")
            if run_id in self._jobs or _status(run, None, False).live or run.lock_holder() is not None:
                # its checkpoint is still being rewritten (the owner lock: a worker that has not yet said so)
                raise ValueError(f"run {run_id} is still training: evaluate it once it has stopped")
            try:  # a cancel left over from an earlier evaluation must not cancel this one
                run.quality_cancel_path.unlink(missing_ok=True)
            except OSError:
                pass
            self._jobs[key] = _Job(run=run, device="cpu", kind="evaluate", quality=kind)
            self._queue.append(key)
            admission.write_evaluation_status(run, kind, "queued", queued=True)
        self._schedule()

    def delete(self, run_id: str) -> None:
        from genlib.runs.pretrained import refuse_if_pretrained

        run = self.store.get(run_id)
        refuse_if_pretrained(run, "deleted")
        refuse_during_evaluation(run, "deleted")
        with self._lock:
            if run_id in self._jobs or _key(run_id, "evaluate") in self._jobs:
                raise ValueError(f"run {run_id} is still training; stop it first")
            if _status(run, None, False).live:  # a job of another server on this runs folder
                raise ValueError(f"run {run_id} is still training (started through another server); stop it first")
            self.store.delete(run_id)

    # ---- queries ----
    def status(self, run_id: str) -> JobStatus:
        run = self.store.get(run_id)
        with self._lock:
            position = self._queue.index(run_id) + 1 if run_id in self._queue else None
            owned = run_id in self._jobs
            lost = self._lost.get(run_id)
        return _status(run, position, owned, lost)

    def evaluation_position(self, run_id: str) -> int | None:
        """The place in line of a queued evaluation of `run_id` on this server, or None."""
        with self._lock:
            key = _key(run_id, "evaluate")
            return self._queue.index(key) + 1 if key in self._queue else None

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
            self._jobs[run.id] = _Job(run=run, device=admission.device_key(device))
            self._queue.append(run.id)
            self._lost.pop(run.id, None)
            try:  # a slot held by an earlier admission of this run is given up; other servers see who queued it
                run.write_state(admitted=None, queued_by=admission.server_mark())
            except OSError:
                pass  # a full disk: the job still queues here; the write that starts it will say so
        self._schedule()

    def _limit(self, device_key: str) -> int:
        return self.max_jobs or default_max_jobs(device_key)

    def _schedule(self) -> None:
        """Start what the caps allow, oldest first. The slots in use are this server's jobs and every job the runs
        folder shows live (other servers' too), counted and marked under the runs folder's admission lock."""
        with self._lock:
            self._drop_stopped()
            if not self._queue:
                return
            mine: dict[str, set[str]] = {}
            for key, job in self._jobs.items():
                if job.handle is not None:
                    mine.setdefault(job.device, set()).add(key)
            if all(len(mine.get(self._jobs[k].device, ())) >= self._limit(self._jobs[k].device) for k in self._queue):
                self._write_places()
                return  # full on this server's own count: no need to read the runs folder
            with admission.admission_lock(self.store.root):
                used = admission.slots_in_use(self.store)
                for device, keys in mine.items():
                    used.setdefault(device, set()).update(keys)
                for key in list(self._queue):
                    job = self._jobs[key]
                    if len(used.get(job.device, ())) >= self._limit(job.device):
                        continue
                    self._queue.remove(key)
                    used.setdefault(job.device, set()).add(key)
                    self._start(key, job)
            self._write_places()

    def _start(self, key: str, job: _Job) -> None:
        """Mark the job admitted in its run folder (its slot, for every server), then launch it."""
        job.started = time.time()
        try:
            if job.kind == "train":
                job.run.write_state(admitted=job.started, queue_place=None)
            else:
                admission.write_evaluation_status(job.run, job.quality, "starting", admitted=job.started)
            job.handle = self.launcher.start(job.run, job.kind, quality=job.quality)
        except (OSError, RuntimeError) as e:  # no process or thread to be had: this job fails, alone
            del self._jobs[key]
            what = "training worker" if job.kind == "train" else "evaluation"
            error = f"the {what} could not start: {type(e).__name__}: {e}"
            try:
                if job.kind == "train":
                    job.run.write_state(state="failed", error=error, message=error, admitted=None)
                else:
                    admission.write_evaluation_status(job.run, job.quality, error, state="failed")
            except OSError:
                if job.kind == "train":
                    self._lost[job.run.id] = (error, error)

    def _drop_stopped(self) -> None:
        """Queued runs stopped (or started) through another server on this runs folder leave this queue."""
        for key in list(self._queue):
            job = self._jobs[key]
            if job.kind != "train":
                continue
            try:
                state, command = job.run.state().get("state"), job.run.control().get("command")
            except OSError:
                continue
            if state == "queued" and command == "stop":
                try:
                    job.run.write_state(state="stopped", message="stopped before it started", queue_place=None)
                except OSError:
                    continue
            elif state == "queued":
                continue
            self._queue.remove(key)
            del self._jobs[key]

    def _write_places(self) -> None:
        """Each queued job's place in line, into its run folder, for the pages of the other servers (rewritten when it
        changes, and every QUEUE_BEAT_S as the queue's heartbeat)."""
        now = time.time()
        for place, key in enumerate(self._queue, start=1):
            job = self._jobs[key]
            if job.place == place and now - job.place_written < admission.QUEUE_BEAT_S:
                continue
            try:
                if job.kind == "train":
                    job.run.write_state(queue_place=place)
                else:
                    admission.write_evaluation_status(job.run, job.quality, "queued", queued=True, place=place)
            except OSError:
                continue
            job.place, job.place_written = place, now

    def _finish_exiting(self, run: Run, timeout: float = 15.0) -> None:
        """A worker that has written its final state may still be exiting: wait for it, then reap it."""
        with self._lock:
            job = self._jobs.get(run.id)
        if job is None or job.handle is None or run.state().get("state") in LIVE_STATES:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self.launcher.status(job.handle).alive:
                    break
            time.sleep(0.05)
        else:
            return
        self._reap()

    def _reap(self) -> None:
        with self._lock:
            for key, job in list(self._jobs.items()):
                if job.handle is None:
                    continue
                liveness = self.launcher.status(job.handle)
                if liveness.alive:
                    continue
                del self._jobs[key]
                if job.kind == "evaluate":
                    admission.fail_silent_evaluation(job.run, job.quality, liveness.reason)
                    continue
                if liveness.refused or job.run.lock_holder() is not None:
                    continue  # another process owns the run (the CLI's resume won the race): its state stands
                state = job.run.state()
                if state.get("state") in LIVE_STATES:  # the worker died without saying why
                    error = liveness.reason or "the training worker ended without recording a result"
                    message = ("The training worker stopped unexpectedly; Continue training resumes from the last "
                               "checkpoint.")
                    try:
                        job.run.write_state(state="failed", error=error, message=message, admitted=None)
                    except OSError as e:  # a full disk: remember it here, so the page still says what happened
                        self._lost[key] = (f"{error}; the failure could not be recorded either "
                                           f"({e.strerror or e})", message)
        self._schedule()

    def _watch(self) -> None:
        while not self._closed.wait(0.5):
            try:
                self._reap()
                with self._lock:
                    if not self._closed.is_set():
                        self.launcher.tend()
            except Exception:  # noqa: BLE001 - the monitor must outlive any single bad run folder
                continue

    def close(self, *, stop_jobs: bool = False, timeout: float = 10.0) -> None:
        """Stop the monitor; with stop_jobs, ask every job to stop and wait for them."""
        if stop_jobs:
            with self._lock:
                jobs = list(self._jobs.items())
            for key, job in jobs:
                if job.kind == "train":
                    self.stop(key)
                else:  # an evaluation: cancelled through its run folder, or dropped from the queue
                    with self._lock:
                        if key in self._queue:
                            self._queue.remove(key)
                            self._jobs.pop(key, None)
                            admission.fail_silent_evaluation(job.run, job.quality, "cancelled before it started")
                    try:
                        job.run.quality_cancel_path.touch()
                    except OSError:
                        pass
            deadline = time.time() + timeout
            while time.time() < deadline:
                self._reap()
                with self._lock:
                    if not self._jobs:
                        break
                time.sleep(0.1)
        self._closed.set()
        with self._lock:
            self.launcher.close()

    def wait(self, run_id: str, timeout: float = 60.0) -> JobStatus:
        """Block until a run leaves the live states (for tests and scripts, never for pages)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            s = self.status(run_id)
            if not s.live:
                return s
            time.sleep(0.05)
        raise TimeoutError(f"run {run_id} still {self.status(run_id).state} after {timeout} s")


def refuse_during_evaluation(run: Run, action: str) -> None:
    """ValueError naming the evaluation (pid, host) while a final/full evaluation of `run` runs: resuming would
    overwrite the checkpoint it reads, deleting would pull the folder from under it."""
    owner = run.evaluation_owner()
    if owner is not None:
        raise ValueError(f"run {run.id} cannot be {action} while {owner.describe()} of it runs: wait for it to "
                         "finish (its progress shows in the quality panel) or cancel it, then try again.")


def _status(run: Run, queue_position: int | None, owned: bool,
            lost: tuple[str, str] | None = None) -> JobStatus:
    info, state = run.info(), run.state()
    name = state.get("state", "unknown")
    if lost is not None and name in LIVE_STATES:  # it failed, but the disk would not take the record
        state = {**state, "error": lost[0], "message": lost[1]}
        name = "failed"
    elif not owned:
        name = run.effective_state()
        if name == "queued" and admission.queued_elsewhere(state):  # another server's queue holds it: its place, as written
            queue_position = state.get("queue_place") if isinstance(state.get("queue_place"), int) else None
        elif name == "queued":  # queued by a server that is gone
            name = "interrupted"
    return JobStatus(run_id=run.id, model=info.get("model", "?"), dataset=info.get("dataset", "?"), state=name,
                     step=int(state.get("step", 0)), total_steps=state.get("total_steps"),
                     epoch=int(state.get("epoch", 0)), images_per_second=state.get("images_per_second"),
                     eta_seconds=state.get("eta_seconds"), message=state.get("message"), error=state.get("error"),
                     queue_position=queue_position, metrics=dict(state.get("metrics") or {}))
