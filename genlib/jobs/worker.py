"""Runs one run folder to completion: builds data and model, resumes from the last checkpoint, trains, and writes
state, metrics, sample grids, snapshots and checkpoints into the folder; obeys pause/stop/knob commands from its
control file (and a SIGTERM, as a Stop). The same `Job` serves the CLI, background threads and worker processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
import traceback
from typing import Any, Callable, Iterator

import torch

from genlib.jobs.budget import check_fits
from genlib.runs.checkpoints import load_checkpoint, save_checkpoint, checkpoint_bytes
from genlib.runs.forks import save_epoch_checkpoint
from genlib.data import load_dataset
from genlib.devices import resolve_device
from genlib.images import grid, png_bytes
from genlib.runs import ownership
from genlib.runs.io import append_jsonl, atomic_write_bytes
from genlib.models import build_model
from genlib.quality.evaluator import ProgressFn
from genlib.quality.records import PlanFn, RunQuality
from genlib.runs.store import Run
from genlib.training import Callbacks, Diverged, Progress, TrainConfig, total_steps, train
from genlib.settings import WORKER_EVALUATIONS, WORKER_THREADS_ENV, current as current_settings  # noqa: F401 - WORKER_THREADS_ENV: API

CONTROL_POLL_S = 0.25
HEARTBEAT_S = 2.0
SAMPLING_BUDGET = 0.1  # live grids and snapshots may take at most this fraction of the training time
QUALITY_EVERY_S = 15.0  # cheap quality figures (genlib.quality.evaluator.CHEAP) at most this often, within SAMPLING_BUDGET


class _Cadence:
    """Run a side task every `every` seconds, but never spend more than `budget` of the time on it."""

    def __init__(self, every: float, budget: float = SAMPLING_BUDGET) -> None:
        self.every, self.budget, self.next = every, budget, 0.0
        self.interval = every  # seconds between runs, as the last run's cost set it

    def due(self) -> bool:
        return time.monotonic() >= self.next

    def done(self, cost: float) -> None:
        self.interval = max(self.every, cost / self.budget)
        self.next = time.monotonic() + self.interval


def worker_threads_from_env() -> int | None:
    """$GENLIB_WORKER_THREADS (torch threads of a run whose config leaves them unset, the dashboard's) as a positive
    int, or None when unset or 0; anything else is refused with a message (genlib.settings)."""
    return current_settings().worker_threads


def dashboard_job_threads(cpus: int | None = None) -> int | None:
    """The torch threads the dashboard gives its jobs when $GENLIB_WORKER_THREADS is unset: 1 on a CPU of at most
    two cores (where the server and a browser on the same machine take part of a core, and a two-thread job waits at
    every matmul for whichever of its threads was descheduled), else None (PyTorch's default)."""
    cpus = os.cpu_count() if cpus is None else cpus
    return 1 if (cpus or 1) <= 2 else None


def fixed_noise_grid(model: Any, cfg: TrainConfig) -> bytes:
    """The seed's `generate_and_save_images`: samples from the same fixed noise every time, as a PNG grid."""
    with model.averaged_weights():  # the weights a checkpoint would show (genlib.models.averaging)
        images = model.sample(cfg.n_samples, generator=torch.Generator().manual_seed(cfg.sample_seed))
    return png_bytes(grid(images))


def write_live(run: Run, model: Any, cfg: TrainConfig, png: bytes | None = None) -> None:
    """live.png (`png` when the caller drew it already), plus `<name>.png` for each grid a model offers through
    `extra_grids()` (the EBM's replay buffer)."""
    atomic_write_bytes(run.live_png, png if png is not None else fixed_noise_grid(model, cfg))
    for name, images in getattr(model, "extra_grids", dict)().items():
        atomic_write_bytes(run.path / f"{name}.png", png_bytes(grid(images)))


EVALUATE_CHOICES = WORKER_EVALUATIONS  # what a job evaluates: nothing; CHEAP while and after; + FINAL


class Terminated(BaseException):
    """A SIGTERM arrived before there was any training to save (while the data loaded): the job ends 'stopped'.
    A BaseException, so that a loader's own `except Exception` cannot swallow it."""


class Heartbeat:
    """While the body runs, stamp state.json's heartbeat every HEARTBEAT_S from a thread: a worker loading or
    generating its data (Ising Monte Carlo: minutes) must not look interrupted to a server that (re)starts."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"genlib-heartbeat-{run.id}", daemon=True)

    def _beat(self) -> None:
        while not self._done.wait(HEARTBEAT_S):
            try:
                self.run.write_state()  # no fields: only the "updated" stamp
            except OSError:
                pass  # a full disk: the next beat tries again; loading goes on

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._done.set()
        self._thread.join()  # before the caller writes state.json again: one writer at a time in this process


class Job:
    """One run folder's training in the steps a worker takes; `run_all()` takes them all and records any failure.

    load_data() resolves the device and loads (or generates) the data with a heartbeat; build() makes the model and
    resumes it from the last checkpoint; step_loop() trains, calling on_log(), on_epoch_end() and read_control();
    finish() checkpoints, writes the last grids, evaluates and records the end state. request_stop() (a SIGTERM)
    stops it as the run's Stop command does.

    One owner per run folder: `owner_lock` is the run's owner lock its caller took (genlib.runs.ownership; a worker
    process keeps it until it exits); without one, run_all() takes it first (RunOwned, nothing written, when another
    process or thread owns the run) and releases it when it returns.
    """

    def __init__(self, run: Run, *, on_log: Callable[[dict[str, Any]], None] | None = None,
                 evaluate: str = "final", on_evaluation_plan: PlanFn | None = None,
                 on_evaluation_progress: ProgressFn | None = None,
                 on_stage: Callable[[str], None] | None = None,
                 owner_lock: ownership.OwnerLock | None = None) -> None:
        if evaluate not in EVALUATE_CHOICES:
            raise ValueError(f"evaluate must be one of {EVALUATE_CHOICES}, got {evaluate!r}")
        self.run, self.info = run, run.info()
        self.on_log_hook, self.evaluate = on_log, evaluate
        self.on_evaluation_plan, self.on_evaluation_progress = on_evaluation_plan, on_evaluation_progress
        self.on_stage = on_stage  # told what the job does after training, before it does it (the CLI's stderr)
        self.progress = Progress()
        self.last: dict[str, Any] = {}  # the last metrics row
        self.cfg: Any = None  # TrainConfig, device and data: set by load_data()
        self.device: Any = None
        self.data: Any = None
        self.model: Any = None  # the model, its steps per epoch and end, the cadences, the quality: set by build()
        self.rejected: dict[str, Any] = {}  # knob values the control file asked for that the model refused
        self.phase = "new"  # new, loading, building, training, finishing, done
        self.stop_reason: str | None = None  # set by request_stop
        self.quality_record: dict[str, Any] | None = None  # the end-of-run evaluation's
        self.grid_step: int | None = None  # the step of the last epoch's grid (also the live one)
        self._poll_next, self._beat = 0.0, time.monotonic()
        self.owner_lock = owner_lock

    # ---- the steps ----

    def start(self) -> None:
        self.run.write_state(state="running", pid=os.getpid(), message="starting", error=None, started=time.time())
        _remove_temporaries(self.run)

    def load_data(self) -> None:
        """The config, device and threads; the size check (before any memory is taken); then the data."""
        self.cfg = cfg = TrainConfig(**self.info["train_config"])
        self.device = resolve_device(cfg.device)
        threads = cfg.threads or worker_threads_from_env()
        if threads:
            torch.set_num_threads(threads)
        torch.manual_seed(cfg.seed)
        check_fits(self.info["model"], self.info["model_config"], batch_size=cfg.batch_size,
                   precision=cfg.precision, dataset=cfg.dataset, device=self.device)
        self.run.write_state(message=f"loading {cfg.dataset} onto {self.device}")
        self.phase = "loading"
        if self.stop_reason is not None:  # asked before the loading began
            raise Terminated(self.stop_reason)
        with Heartbeat(self.run):
            self.data = load_dataset(cfg.dataset, root=cfg.data_root, device=self.device)
        self.phase = "building"

    def build(self) -> None:
        """The model, resumed from the run's last checkpoint with its knobs; the step count; the side tasks' cadences."""
        cfg, data, run = self.cfg, self.data, self.run
        model = self.model = build_model(self.info["model"], self.info["model_config"]).to(self.device)
        shape = getattr(model.config, "image_shape", None)
        if shape is not None and tuple(shape) != tuple(data.image_shape):
            raise ValueError(f"this model takes images of shape {tuple(shape)}, but {cfg.dataset} has "
                             f"{tuple(data.image_shape)}: set image_shape to {tuple(data.image_shape)}.")
        lr = float(run.control().get("lr") or cfg.lr)
        model.configure_training(lr=lr, precision=cfg.precision, ema=cfg.ema)
        if run.checkpoint_path.exists():
            ckpt = load_checkpoint(run.checkpoint_path, device=self.device)
            model.load_state_dict(ckpt.model_state)
            if ckpt.training_state:
                model.load_training_state(ckpt.training_state)
            model.set_lr(lr)
            _restore_knobs(model, (ckpt.extra or {}).get("knobs"))  # the knobs at the checkpoint (lr included)
            self.progress = Progress(step=ckpt.step, images=int(ckpt.progress.get("images", 0)),
                                     seconds=float(ckpt.progress.get("seconds", 0.0)))
            torch.manual_seed(cfg.seed + ckpt.step)  # fresh noise after a resume, still reproducible
        _apply_knobs(run, model, self.progress, self.rejected)  # changed while the run was stopped: applied now
        self.spe = data.steps_per_epoch(cfg.batch_size)
        self.end = total_steps(cfg, self.spe)
        self.live, self.snap = _Cadence(cfg.live_every_s), _Cadence(cfg.snapshot_every_s)
        self.epoch_s: float | None = None  # the last epoch's wall-clock seconds (short_epochs)
        self._epoch_began = time.monotonic()
        self.ckpt_cadence = _Cadence(cfg.checkpoint_every_s, budget=0.05)
        self.ckpt_cadence.next = time.monotonic() + cfg.checkpoint_every_s
        self.quality = RunQuality(run, data, stop=lambda: self.stop_reason is not None)
        self.quality_cadence = _Cadence(QUALITY_EVERY_S)
        self.quality_cadence.next = time.monotonic() + QUALITY_EVERY_S  # the first after some training

    def step_loop(self) -> str:
        """Train until the end ('finished') or a stop ('stopped')."""
        if self.run.control().get("command") == "stop" or self.stop_reason is not None:
            return "stopped"
        self.phase = "training"
        self.progress = train(self.model, self.data, self.cfg, progress=self.progress,
                              callbacks=Callbacks(on_log=self.on_log, on_epoch_end=self.on_epoch_end,
                                                  control=self.read_control))
        return "finished" if self.progress.step >= self.end else "stopped"

    def finish(self, final: str) -> None:
        """The last checkpoint and grids, the end-of-run evaluation of a finished run, and the end state."""
        self.phase = "finishing"
        run, model, p = self.run, self.model, self.progress
        if self.on_stage is not None:
            self.on_stage("saving the last checkpoint and drawing the last sample grid")
        self.checkpoint()
        png = None
        # a SIGTERM leaves seconds before the SIGKILL: the checkpoint, then the state; a run that ends at an epoch's
        # end has these weights' grid already, unless on_epoch_end left it to the live cadence (short epochs)
        if self.stop_reason is None and self.grid_step != p.step:
            png = fixed_noise_grid(model, self.cfg)  # the same fixed noise: one draw for both grids
            write_live(run, model, self.cfg, png)
        if final == "finished" and (not run.epoch_grids() or (png is not None and p.step % self.spe == 0)):
            run.write_epoch_grid(p.epoch(self.spe), png if png is not None else fixed_noise_grid(model, self.cfg))
        if final == "finished" and self.evaluate != "none" and self.stop_reason is None:
            with model.averaged_weights():  # records its figures, or its error: never raises
                self.quality_record = self.quality.final(model, p.step, self.evaluate,
                                                         on_progress=self.on_evaluation_progress,
                                                         on_plan=self.on_evaluation_plan, train_seconds=p.seconds)
        run.write_state(state=final, step=p.step, epoch=p.epoch(self.spe), images=p.images,
                        seconds=round(p.seconds, 2), total_steps=self.end, eta_seconds=0,
                        message=self.stop_reason if final == "stopped" else None)
        self.phase = "done"

    def run_all(self) -> dict[str, Any]:
        """All the steps; failures are recorded in state.json, never raised, except KeyboardInterrupt (recorded as
        'stopped', then re-raised). Returns the summary. RunOwned, before anything is written, when another process
        owns the run folder."""
        if self.owner_lock is not None:
            return self._run_all()
        with ownership.take(self.run.path):
            return self._run_all()

    def _run_all(self) -> dict[str, Any]:
        run = self.run
        self.start()
        try:
            self.load_data()
            self.build()
            final = self.step_loop()
            self.finish(final)
        except Terminated as e:
            run.write_state(state="stopped", message=str(e))
            final = "stopped"
        except Diverged as e:
            run.write_state(state="diverged", error=str(e), message=str(e), step=e.step)
            final = "diverged"
        except KeyboardInterrupt:
            run.write_state(state="stopped", message="interrupted from the keyboard")
            raise
        except (torch.OutOfMemoryError, MemoryError) as e:
            run.write_state(state="failed", error=f"out of memory: {e}".strip(),
                            message="Out of memory: use a smaller batch size or model, or another device.")
            final = "failed"
        except Exception as e:  # noqa: BLE001 - the job fails alone, with its error shown, never silently
            run.write_state(state="failed", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(),
                            message=f"{type(e).__name__}: {e}")
            final = "failed"
        return self.summary(final)

    def summary(self, final: str) -> dict[str, Any]:
        """The CLI's last line: what was trained, how fast, the last metrics, the error, the end evaluation."""
        p, model = self.progress, self.model
        out = {"run_dir": str(self.run.path), "run_id": self.run.id, "state": final, "steps": p.step,
               "images": p.images, "seconds": round(p.seconds, 3),
               "images_per_second": round(p.images / p.seconds, 1) if p.seconds > 0 else 0.0,
               "metrics": {k: v for k, v in self.last.items() if model is not None and k in model.metric_names},
               "error": self.run.state().get("error")}
        if self.quality_record is not None:
            out["quality"] = {k: self.quality_record.get(k) for k in
                              ("kind", "seconds", "expected_seconds", "error", "figures")}
        return out

    # ---- what the training loop calls ----

    def checkpoint(self) -> None:
        save_checkpoint(self.run.checkpoint_path, self.model, train_config=self.info["train_config"],
                        progress=self.progress.as_dict(self.spe),
                        extra={"run_id": self.run.id, "dataset": self.cfg.dataset, "knobs": self.model.knobs()})

    def snapshot(self) -> None:
        atomic_write_bytes(self.run.snapshot_path, checkpoint_bytes(
            self.model, train_config=self.info["train_config"], progress=self.progress.as_dict(self.spe),
            with_training_state=False))

    def side_tasks(self) -> None:
        """Live grid, snapshot, checkpoint and cheap evaluation, each when its cadence says (within its budget)."""
        tasks = [(self.snap, self.snapshot), (self.ckpt_cadence, self.checkpoint)]
        if not self.short_epochs():  # else the next epoch's end draws it (on_epoch_end)
            tasks.insert(0, (self.live, lambda: write_live(self.run, self.model, self.cfg)))
        if self.evaluate != "none":
            tasks.append((self.quality_cadence, self.periodic_quality))
        for cadence, task in tasks:
            if cadence.due():
                t0 = time.perf_counter()
                task()
                self.model.train()
                cadence.done(time.perf_counter() - t0)

    def periodic_quality(self) -> None:
        with self.model.averaged_weights():  # the model a checkpoint shows
            self.quality.periodic(self.model, self.progress.step, self.progress.seconds)

    def on_log(self, row: dict[str, Any]) -> None:
        p, cfg = self.progress, self.cfg
        row["t"] = round(time.time(), 3)
        self.last = row
        append_jsonl(self.run.metrics_path, [row])
        left = max(self.end - p.step, 0) * cfg.batch_size / row["images_per_second"] \
            if row["images_per_second"] > 0 else None
        self.run.write_state(state="running", step=p.step, epoch=row["epoch"], images=p.images,
                             seconds=round(p.seconds, 2), total_steps=self.end, steps_per_epoch=self.spe,
                             images_per_second=row["images_per_second"], eta_seconds=left, message=None,
                             metrics={k: row[k] for k in self.model.metric_names if k in row})
        self.side_tasks()
        if self.on_log_hook:
            self.on_log_hook(row)

    def short_epochs(self) -> bool:
        """Whether epochs end more often than the live cadence draws: then the live grid is drawn at epoch ends only."""
        return self.epoch_s is not None and self.epoch_s < self.live.interval

    def on_epoch_end(self, epoch: int, p: Progress) -> None:
        # the epoch's grid is also the live one (the same fixed noise, the same weights) and restarts the live
        # cadence. Where epochs are shorter than that cadence (the RBM's 600 steps take ~3 s on a half-speed core, its
        # 500 Gibbs sweeps ~1 s), live grids are drawn at epoch ends only, when the cadence is due, so that grids stay
        # within SAMPLING_BUDGET: one at every epoch's end took a quarter of a lecture's first two minutes. The
        # worker's first epoch always has a grid, and the last one (finish()).
        now = time.monotonic()
        self.epoch_s, self._epoch_began = now - self._epoch_began, now
        if self.live.due() or not self.short_epochs() or self.grid_step is None:
            t0 = time.perf_counter()
            png = fixed_noise_grid(self.model, self.cfg)
            self.run.write_epoch_grid(epoch, png)
            write_live(self.run, self.model, self.cfg, png)
            self.live.done(time.perf_counter() - t0)
            self.grid_step = p.step
            self.model.train()
        self.checkpoint()
        save_epoch_checkpoint(self.run, self.model, epoch, train_config=self.info["train_config"],
                              progress=self.progress.as_dict(self.spe),
                              extra={"run_id": self.run.id, "dataset": self.cfg.dataset})
        self.ckpt_cadence.done(0.0)

    def read_control(self, p: Progress) -> bool:
        """The control file (every CONTROL_POLL_S): knobs applied, pause held here, heartbeat; False to stop."""
        if self.stop_reason is not None:
            return False
        now = time.monotonic()
        if now < self._poll_next:
            return True
        self._poll_next = now + CONTROL_POLL_S
        run = self.run
        command = _apply_knobs(run, self.model, p, self.rejected)
        if command == "pause":
            self.checkpoint()
            run.write_state(state="paused", step=p.step, message="paused")
            while command == "pause" and self.stop_reason is None:
                time.sleep(CONTROL_POLL_S)
                command = _apply_knobs(run, self.model, p, self.rejected)
                if time.monotonic() - self._beat > HEARTBEAT_S:
                    run.write_state(state="paused")
                    self._beat = time.monotonic()
            run.write_state(state="running", message=None)
        if now - self._beat > HEARTBEAT_S:
            run.write_state(state="running")
            self._beat = now
        return command != "stop" and self.stop_reason is None

    # ---- from outside ----

    def request_stop(self, reason: str) -> None:
        """Stop as the Stop button does: at the next control read (checkpoint, state 'stopped' with `reason`); a
        running end-of-run evaluation is cancelled; while the data loads, at once (raises Terminated)."""
        self.stop_reason = reason
        if self.phase == "loading":
            raise Terminated(reason)


def run_job(run: Run, *, on_log: Callable[[dict[str, Any]], None] | None = None, evaluate: str = "final",
            on_evaluation_plan: PlanFn | None = None,
            on_evaluation_progress: ProgressFn | None = None,
            on_stage: Callable[[str], None] | None = None,
            owner_lock: ownership.OwnerLock | None = None) -> dict[str, Any]:
    """Train the run in `run`'s folder until its configured end, a stop command, or a failure (see Job).

    `evaluate`: "final" (the dashboard's: CHEAP figures while training, FINAL at the end), "cheap" (CHEAP at the end
    too) or "none". Returns the summary (also the CLI's last line); failures are recorded in state.json, never
    raised, except KeyboardInterrupt, which is recorded as 'stopped' and re-raised, and RunOwned (nothing written)
    when another process owns the run folder and `owner_lock` is not its lock, already taken.
    """
    return Job(run, on_log=on_log, evaluate=evaluate, on_evaluation_plan=on_evaluation_plan,
               on_evaluation_progress=on_evaluation_progress, on_stage=on_stage, owner_lock=owner_lock).run_all()


SIGTERM_MESSAGE = "stopped by a SIGTERM (for example `ray job stop`); Continue training resumes it"


@contextlib.contextmanager
def stop_on_sigterm(job: Job) -> Iterator[None]:
    """While the body runs, a SIGTERM (what Ray's job stop and most supervisors send) stops `job` cleanly instead
    of killing the process. Only the main thread can take signals: elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: job.request_stop(SIGTERM_MESSAGE))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_and_report(run: Run) -> int:
    """A worker process's whole job (`python -m genlib worker`, genlib.jobs.standby): the Job (a SIGTERM stops it
    cleanly), its summary as the last line on stdout, and the exit code: 0 when the run finished or was stopped,
    1 when it failed or diverged, ownership.OWNED_EXIT (nothing written, the owner named on stderr) when another
    process owns the run folder. The owner lock is held until this process exits."""
    try:
        lock = ownership.take(run.path)
    except ownership.RunOwned as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return ownership.OWNED_EXIT
    job = Job(run, evaluate=current_settings().worker_evaluate, owner_lock=lock)  # "final" unless set otherwise
    with stop_on_sigterm(job):
        summary = job.run_all()
    print(json.dumps(summary), flush=True)
    return 0 if summary["state"] in ("finished", "stopped") else 1


def _remove_temporaries(run: Run) -> None:
    """Delete the half-written temporaries a killed worker left (this worker's own kinds only: the server may be
    writing control.json right now). The files they were to replace are intact: every write ends in a rename."""
    for p in run.path.rglob(".*.tmp"):
        if not p.name.startswith(f".{run.control_path.name}."):
            try:
                p.unlink()
            except OSError:
                pass


def _restore_knobs(model: Any, knobs: dict[str, Any] | None) -> None:
    """Set the live knobs a checkpoint recorded (values this model refuses are skipped: the config's stay)."""
    for name, value in (knobs or {}).items():
        if name in getattr(model, "live_knobs", ()) and value is not None:
            try:
                model.set_knob(name, value)
            except (TypeError, ValueError):
                continue


def _apply_knobs(run: Run, model: Any, p: Progress, rejected: dict[str, Any]) -> str:
    """Read the control file; apply the live knobs that changed (lr, and the model's own: the VAE's beta, the RBM's
    k), log them as one knob event in metrics.jsonl (the loss chart marks it), and return the command.

    A value the model refuses is remembered in `rejected` and reported once in the state's message, never raised:
    a typo sent to a running job must not kill it."""
    control = run.control()
    changed: dict[str, Any] = {}
    for name in getattr(model, "live_knobs", ("lr",)):
        value = control.get(name)
        if value is None or (name in rejected and rejected[name] == value):
            continue
        try:
            if value == getattr(model, name):
                continue
            model.set_knob(name, value)
        except (TypeError, ValueError) as e:
            rejected[name] = value
            run.write_state(message=f"The new {name} was not applied: {e}")
            continue
        changed[name] = getattr(model, name)
    if changed:
        append_jsonl(run.metrics_path, [{"event": "knob", "step": p.step, **changed, "t": round(time.time(), 3)}])
    return str(control.get("command", "run"))
