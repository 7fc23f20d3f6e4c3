"""Runs one run folder to completion: builds data and model, resumes from the last checkpoint, trains, and writes
state, metrics, sample grids, snapshots and checkpoints into the folder; obeys pause/stop/knob commands from its
control file. The same function serves the CLI, background threads and background worker processes.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from typing import Any, Callable

import torch

from genlib.jobs.budget import check_fits
from genlib.runs.checkpoints import load_checkpoint, save_checkpoint, checkpoint_bytes
from genlib.runs.forks import save_epoch_checkpoint
from genlib.data import load_dataset
from genlib.devices import resolve_device
from genlib.images import grid, png_bytes
from genlib.runs.io import append_jsonl, atomic_write_bytes
from genlib.models import build_model
from genlib.quality.records import RunQuality
from genlib.runs.store import Run
from genlib.training import Callbacks, Diverged, Progress, TrainConfig, total_steps, train

CONTROL_POLL_S = 0.25
HEARTBEAT_S = 2.0
SAMPLING_BUDGET = 0.1  # live grids and snapshots may take at most this fraction of the training time
QUALITY_EVERY_S = 15.0  # cheap quality figures (genlib.quality.evaluator.CHEAP) at most this often, within SAMPLING_BUDGET


class _Cadence:
    """Run a side task every `every` seconds, but never spend more than `budget` of the time on it."""

    def __init__(self, every: float, budget: float = SAMPLING_BUDGET) -> None:
        self.every, self.budget, self.next = every, budget, 0.0

    def due(self) -> bool:
        return time.monotonic() >= self.next

    def done(self, cost: float) -> None:
        self.next = time.monotonic() + max(self.every, cost / self.budget)


WORKER_THREADS_ENV = "GENLIB_WORKER_THREADS"  # torch threads of a run whose config leaves them unset (the dashboard's)


def worker_threads_from_env() -> int | None:
    """$GENLIB_WORKER_THREADS as a positive int, or None when unset or 0; anything else is refused with a message."""
    raw = os.environ.get(WORKER_THREADS_ENV, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) > 256:
        raise ValueError(f"${WORKER_THREADS_ENV} must be a whole number of threads from 0 to 256, got {raw!r}")
    return int(raw) or None


def dashboard_job_threads(cpus: int | None = None) -> int | None:
    """The torch threads the dashboard gives its jobs when $GENLIB_WORKER_THREADS is unset: 1 on a CPU of at most
    two cores (where the server and a browser on the same machine take part of a core, and a two-thread job waits at
    every matmul for whichever of its threads was descheduled), else None (PyTorch's default)."""
    cpus = os.cpu_count() if cpus is None else cpus
    return 1 if (cpus or 1) <= 2 else None


def fixed_noise_grid(model: Any, cfg: TrainConfig) -> bytes:
    """The seed's `generate_and_save_images`: samples from the same fixed noise every time, as a PNG grid."""
    images = model.sample(cfg.n_samples, generator=torch.Generator().manual_seed(cfg.sample_seed))
    return png_bytes(grid(images))


def write_live(run: Run, model: Any, cfg: TrainConfig) -> None:
    """live.png, plus `<name>.png` for each grid a model offers through `extra_grids()` (the EBM's replay buffer)."""
    atomic_write_bytes(run.live_png, fixed_noise_grid(model, cfg))
    for name, images in getattr(model, "extra_grids", dict)().items():
        atomic_write_bytes(run.path / f"{name}.png", png_bytes(grid(images)))


def run_job(run: Run, *, on_log: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train the run in `run`'s folder until its configured end, a stop command, or a failure.

    Returns the summary (also the CLI's last line); failures are recorded in state.json, never raised, except
    KeyboardInterrupt, which is recorded as 'stopped' and re-raised.
    """
    info = run.info()
    started = time.time()
    run.write_state(state="running", pid=os.getpid(), message="starting", error=None, started=started)
    _remove_temporaries(run)
    last: dict[str, Any] = {}
    model = None
    progress = Progress()
    try:
        cfg = TrainConfig(**info["train_config"])
        device = resolve_device(cfg.device)
        threads = cfg.threads or worker_threads_from_env()
        if threads:
            torch.set_num_threads(threads)
        torch.manual_seed(cfg.seed)
        # sizes that cannot fit are refused here, before the data or the model takes any memory
        check_fits(info["model"], info["model_config"], batch_size=cfg.batch_size, precision=cfg.precision,
                   dataset=cfg.dataset, device=device)
        run.write_state(message=f"loading {cfg.dataset} onto {device}")
        data = load_dataset(cfg.dataset, root=cfg.data_root, device=device)
        model = build_model(info["model"], info["model_config"]).to(device)
        shape = getattr(model.config, "image_shape", None)
        if shape is not None and tuple(shape) != tuple(data.image_shape):
            raise ValueError(f"this model takes images of shape {tuple(shape)}, but {cfg.dataset} has "
                             f"{tuple(data.image_shape)}: set image_shape to {tuple(data.image_shape)}.")
        lr = float(run.control().get("lr") or cfg.lr)
        model.configure_training(lr=lr, precision=cfg.precision)
        if run.checkpoint_path.exists():
            ckpt = load_checkpoint(run.checkpoint_path, device=device)
            model.load_state_dict(ckpt.model_state)
            if ckpt.training_state:
                model.load_training_state(ckpt.training_state)
            model.set_lr(lr)
            _restore_knobs(model, (ckpt.extra or {}).get("knobs"))  # the knobs at the checkpoint (lr included)
            progress = Progress(step=ckpt.step, images=int(ckpt.progress.get("images", 0)),
                                seconds=float(ckpt.progress.get("seconds", 0.0)))
            torch.manual_seed(cfg.seed + ckpt.step)  # fresh noise after a resume, still reproducible
        rejected: dict[str, Any] = {}  # knob values the control file asked for that the model refused
        _apply_knobs(run, model, progress, rejected)  # changed while the run was stopped: applied (and marked) now
        spe = data.steps_per_epoch(cfg.batch_size)
        end = total_steps(cfg, spe)

        def checkpoint() -> None:
            save_checkpoint(run.checkpoint_path, model, train_config=info["train_config"],
                            progress=progress.as_dict(spe),
                            extra={"run_id": run.id, "dataset": cfg.dataset, "knobs": model.knobs()})

        live, snap, ckpt_cadence = _Cadence(cfg.live_every_s), _Cadence(cfg.snapshot_every_s), \
            _Cadence(cfg.checkpoint_every_s, budget=0.05)
        live.next = snap.next = 0.0
        ckpt_cadence.next = time.monotonic() + cfg.checkpoint_every_s
        quality, quality_cadence = RunQuality(run, data), _Cadence(QUALITY_EVERY_S)
        quality_cadence.next = time.monotonic() + QUALITY_EVERY_S  # the first after some training

        def side_tasks() -> None:
            for cadence, task in ((live, lambda: write_live(run, model, cfg)),
                                  (snap, lambda: atomic_write_bytes(run.snapshot_path, checkpoint_bytes(
                                      model, train_config=info["train_config"], progress=progress.as_dict(spe),
                                      with_training_state=False))),
                                  (ckpt_cadence, checkpoint),
                                  (quality_cadence, lambda: quality.periodic(model, progress.step))):
                if cadence.due():
                    t0 = time.perf_counter()
                    task()
                    model.train()
                    cadence.done(time.perf_counter() - t0)

        def log(row: dict[str, Any]) -> None:
            nonlocal last
            row["t"] = round(time.time(), 3)
            last = row
            append_jsonl(run.metrics_path, [row])
            left = max(end - progress.step, 0) * cfg.batch_size / row["images_per_second"] \
                if row["images_per_second"] > 0 else None
            run.write_state(state="running", step=progress.step, epoch=row["epoch"], images=progress.images,
                            seconds=round(progress.seconds, 2), total_steps=end, steps_per_epoch=spe,
                            images_per_second=row["images_per_second"], eta_seconds=left, message=None,
                            metrics={k: row[k] for k in model.metric_names if k in row})
            side_tasks()
            if on_log:
                on_log(row)

        def epoch_end(epoch: int, p: Progress) -> None:
            run.write_epoch_grid(epoch, fixed_noise_grid(model, cfg))
            model.train()
            checkpoint()
            save_epoch_checkpoint(run, model, epoch, train_config=info["train_config"],
                                  progress=progress.as_dict(spe), extra={"run_id": run.id, "dataset": cfg.dataset})
            ckpt_cadence.done(0.0)

        poll = {"next": 0.0, "beat": time.monotonic()}

        def control(p: Progress) -> bool:
            now = time.monotonic()
            if now < poll["next"]:
                return True
            poll["next"] = now + CONTROL_POLL_S
            command = _apply_knobs(run, model, p, rejected)
            if command == "pause":
                checkpoint()
                run.write_state(state="paused", step=p.step, message="paused")
                while command == "pause":
                    time.sleep(CONTROL_POLL_S)
                    command = _apply_knobs(run, model, p, rejected)
                    if time.monotonic() - poll["beat"] > HEARTBEAT_S:
                        run.write_state(state="paused")
                        poll["beat"] = time.monotonic()
                run.write_state(state="running", message=None)
            if now - poll["beat"] > HEARTBEAT_S:
                run.write_state(state="running")
                poll["beat"] = now
            return command != "stop"

        if run.control().get("command") == "stop":
            final = "stopped"
        else:
            progress = train(model, data, cfg, progress=progress,
                             callbacks=Callbacks(on_log=log, on_epoch_end=epoch_end, control=control))
            final = "finished" if progress.step >= end else "stopped"
        checkpoint()
        write_live(run, model, cfg)
        if final == "finished" and not run.epoch_grids():
            run.write_epoch_grid(progress.epoch(spe), fixed_noise_grid(model, cfg))
        if final == "finished":
            quality.final(model, progress.step)  # records its figures, or its error: never raises
        run.write_state(state=final, step=progress.step, epoch=progress.epoch(spe), images=progress.images,
                        seconds=round(progress.seconds, 2), total_steps=end, message=None, eta_seconds=0)
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
    seconds = progress.seconds
    return {"run_dir": str(run.path), "run_id": run.id, "state": final, "steps": progress.step,
            "images": progress.images, "seconds": round(seconds, 3),
            "images_per_second": round(progress.images / seconds, 1) if seconds > 0 else 0.0,
            "metrics": {k: v for k, v in last.items() if model is not None and k in model.metric_names},
            "error": run.state().get("error")}


def run_and_report(run: Run) -> int:
    """A worker process's whole job (`python -m genlib worker`, genlib.jobs.standby): `run_job`, its summary as the last
    line on stdout, and the exit code: 0 when the run finished or was stopped, 1 when it failed or diverged."""
    summary = run_job(run)
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
