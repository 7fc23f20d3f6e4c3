"""Quality evaluations of a run folder: the records a training worker or a background job writes (quality.jsonl,
quality.json, quality-status.json), the worker's CHEAP-then-FINAL cadence, and evaluating a saved run in the
foreground, a thread or a `python -m genlib.quality.records` process (the figures themselves: genlib/quality/evaluator.py).

Every evaluation appends one JSON line to quality.jsonl (step, time, settings, figures, or the error); final and full
ones also replace quality.json atomically. An evaluation that fails records its error and never fails the training
job.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

from genlib.models import model_class, model_names
from genlib.runs.io import append_jsonl, atomic_write_json
from genlib.runs.schema import QUALITY_VERSION, QualityStatus, RunRecord
from genlib.runs.store import this_host
from genlib.quality.estimate import estimate_stages
from genlib.quality.evaluator import EvaluationCancelled, ProgressFn, QualityEvaluator
from genlib.quality.settings import CHEAP, FINAL, FULL, KINDS, QualitySettings, settings_for

STATUS_WRITE_S = 0.5  # the evaluation status file is rewritten at most this often
STATUS_STALE_S = 300.0  # a 'running' status not refreshed for this long belongs to an evaluation that died

PlanFn = Callable[[dict[str, float]], None]  # the stages an evaluation will run and their expected seconds


# ---- records in the run folder ----

def make_record(kind: str, step: int, figures: dict[str, Any] | None = None, *, error: str | None = None,
                seconds: float = 0.0, settings: QualitySettings | None = None, **extra: Any) -> dict[str, Any]:
    """One evaluation as stored: what, when, how long, with which settings, and the figures or the error."""
    return {"version": QUALITY_VERSION, "kind": kind, "step": int(step), "t": round(time.time(), 3),
            "seconds": round(seconds, 3),
            "settings": dataclasses.asdict(settings) if settings is not None else None,
            "figures": figures or {}, "error": error, **extra}


def save_record(run: Any, record: dict[str, Any]) -> None:
    """Append to quality.jsonl; a final or full evaluation with figures also becomes quality.json (atomically)."""
    append_jsonl(run.quality_path, [record])
    if record["kind"] in ("final", "full") and record.get("error") is None:
        atomic_write_json(run.quality_summary_path, record, within=run.path)  # never recreates a deleted run


def _error_text(e: BaseException) -> str:
    if isinstance(e, (torch.OutOfMemoryError, MemoryError)):
        return f"out of memory: {e}".strip()
    return f"{type(e).__name__}: {e}".strip().rstrip(":")


class _Status:
    """Writes quality-status.json (state, fraction, message, heartbeat) at most every STATUS_WRITE_S seconds."""

    def __init__(self, run: Any, kind: str) -> None:
        self.run, self.kind, self.last = run, kind, 0.0

    def write(self, state: str, fraction: float = 0.0, message: str = "", *, force: bool = False,
              **extra: Any) -> None:
        now = time.monotonic()
        if not force and now - self.last < STATUS_WRITE_S:
            return
        self.last = now
        try:
            QualityStatus(state=state, kind=self.kind, fraction=round(min(max(fraction, 0.0), 1.0), 4),
                          message=message, pid=os.getpid(), host=this_host(), updated=time.time(),
                          extra=extra).save(self.run.quality_status_path)  # never recreates a deleted run
        except OSError:
            pass  # a status line is a courtesy: a full disk must not fail the evaluation for it


def evaluate_record(evaluator: QualityEvaluator, model: Any, settings: QualitySettings, step: int, *,
                    on_progress: ProgressFn | None = None, on_plan: PlanFn | None = None,
                    **extra: Any) -> dict[str, Any]:
    """Evaluate `model` and return its record (make_record: the figures, or the error), saving nothing; never
    raises (but KeyboardInterrupt). Every evaluation's record is made here: run_evaluation saves it in a run
    folder, scripts/results_table.py keeps it in its JSON.

    With `on_plan`, the stages' expected seconds are first timed by short probes (genlib.quality.estimate) and
    passed to it, and their sum is recorded as "expected_seconds".
    """
    previous, evaluator.progress = evaluator.progress, on_progress
    t0 = time.perf_counter()
    try:
        if on_plan is not None:
            stages = estimate_stages(evaluator, model, settings)
            extra = {**extra, "expected_seconds": round(sum(stages.values()), 1)}
            on_plan(stages)
        figures = evaluator.evaluate(model, settings)
        return make_record(settings.kind, step, figures, seconds=time.perf_counter() - t0, settings=settings,
                           **extra)
    except KeyboardInterrupt:
        raise
    except EvaluationCancelled as e:
        return make_record(settings.kind, step, error=f"cancelled: {e}", seconds=time.perf_counter() - t0,
                           settings=settings, cancelled=True, **extra)
    except Exception as e:  # noqa: BLE001 - a failed evaluation is recorded; it must never end the training job
        return make_record(settings.kind, step, error=_error_text(e), seconds=time.perf_counter() - t0,
                           settings=settings, traceback=traceback.format_exc(limit=8), **extra)
    finally:
        evaluator.progress = previous


def run_evaluation(run: Any, evaluator: QualityEvaluator, model: Any, settings: QualitySettings, step: int,
                   *, on_progress: ProgressFn | None = None, on_plan: PlanFn | None = None,
                   **extra: Any) -> dict[str, Any]:
    """Evaluate (evaluate_record), save the record in the run folder and return it; never raises (but
    KeyboardInterrupt). A final or full evaluation also keeps quality-status.json up to date for the dashboard's
    progress bar."""
    status = _Status(run, settings.kind) if settings.kind != "cheap" else None

    def progress(fraction: float, message: str) -> None:
        if status is not None:
            status.write("running", fraction, message)
        if on_progress is not None:
            on_progress(fraction, message)

    if status is not None:
        status.write("running", 0.0, "starting", force=True)
    record = evaluate_record(evaluator, model, settings, step, on_progress=progress, on_plan=on_plan, **extra)
    try:
        save_record(run, record)
    except OSError:
        pass  # a full disk: the figures are lost, the training is not
    if status is not None:
        state = "done" if record["error"] is None else ("cancelled" if record.get("cancelled") else "failed")
        status.write(state, 1.0, record["error"] or "done", force=True, step=record["step"])
    return record


class RunQuality:
    """The quality records of one training worker: CHEAP evaluations when its cadence says, FINAL (or the kind its
    caller chose) at the end."""

    def __init__(self, run: Any, data: Any, *, cache_dir: Path | str | None = None,
                 stop: Callable[[], bool] | None = None) -> None:
        self.run = run
        self._stop = stop  # the worker's own stop request (a SIGTERM), besides the run's control file
        self._poll = {"next": 0.0, "stop": False}
        self.evaluator = QualityEvaluator(data, cache_dir=cache_dir, cancelled=self._stop_requested)

    def _stop_requested(self) -> bool:
        """The run's Stop command or the panel's Cancel (its control file read at most four times a second)."""
        if self._stop is not None and self._stop():
            return True
        now = time.monotonic()
        if now >= self._poll["next"]:
            self._poll["next"] = now + 0.25
            # the panel's Cancel counts only in the end-of-run evaluation (the only one it is shown for): a
            # quality.cancel left over from an earlier evaluation must never cancel the cheap ones
            self._poll["stop"] = self.run.control().get("command") == "stop" or (
                self._poll.get("final", False) and self.run.quality_cancel_path.exists())
        return self._poll["stop"]

    def periodic(self, model: Any, step: int, train_seconds: float | None = None) -> dict[str, Any]:
        """A CHEAP evaluation; `train_seconds` (the run's training seconds so far) lets the quality panel plot it
        against time as well as steps."""
        return run_evaluation(self.run, self.evaluator, model, CHEAP, step, **_seconds(train_seconds))

    def final(self, model: Any, step: int, kind: str = "final", *, on_progress: ProgressFn | None = None,
              on_plan: PlanFn | None = None, train_seconds: float | None = None) -> dict[str, Any]:
        """The end-of-run evaluation (FINAL, or CHEAP where the user chose it); its progress also goes to the run's
        state message ('Stop' skips it) and to `on_progress`."""
        settings = {"cheap": CHEAP, "final": FINAL, "full": FULL}[kind]  # read now: tests and scripts replace them
        try:
            self.run.quality_cancel_path.unlink(missing_ok=True)
        except OSError:
            pass
        self._poll["next"] = 0.0
        self._poll["final"] = True  # from here the panel's Cancel applies (the leftover was cleared just above)
        last = {"t": 0.0}

        def to_state(fraction: float, message: str) -> None:
            if on_progress is not None:
                on_progress(fraction, message)
            if time.monotonic() - last["t"] >= 1.0:  # also the worker's heartbeat while it evaluates
                last["t"] = time.monotonic()
                try:
                    self.run.write_state(message=f"{kind} evaluation ({fraction:.0%}), Stop skips it: {message}")
                except OSError:
                    pass

        return run_evaluation(self.run, self.evaluator, model, settings, step, on_progress=to_state,
                              on_plan=on_plan, **_seconds(train_seconds))


def _seconds(train_seconds: float | None) -> dict[str, float]:
    """The record's "train_seconds" entry (none when unknown, as in records made before it existed)."""
    return {} if train_seconds is None else {"train_seconds": round(float(train_seconds), 2)}


# ---- evaluating a saved run, in the foreground or the background ----

def run_dataset(info: dict[str, Any]) -> str:
    """The dataset a run trained on, from its run.json: genlib.runs.schema.RunRecord.resolved_dataset (Run.dataset)."""
    return RunRecord.from_dict(info, where="run.json").resolved_dataset


def evaluation_device(device: torch.device | str) -> torch.device:
    """The device to evaluate on: "auto" resolved as training does; Apple's GPUs lack float64 (AIS): their CPU."""
    from genlib.devices import resolve_device

    device = resolve_device(device) if isinstance(device, str) and device == "auto" else torch.device(device)
    return torch.device("cpu") if device.type == "mps" else device


def evaluate_saved_run(run: Any, settings: QualitySettings = FULL, *, device: torch.device | str = "cpu",
                       cache_dir: Path | str | None = None, data_root: Path | str | None = None,
                       progress: ProgressFn | None = None, on_plan: PlanFn | None = None) -> dict[str, Any]:
    """Evaluate a run folder's last checkpoint (else its snapshot) and record it; returns the record, never raises.

    Loading problems (no checkpoint, dataset missing) are recorded as the evaluation's error too. `device` may be
    "auto"; `data_root` defaults to the run's own, then $GENLIB_DATA_ROOT; `on_plan`: see run_evaluation.
    """
    from genlib.runs.checkpoints import load_checkpoint, model_from_checkpoint
    from genlib.data import load_dataset

    status = _Status(run, settings.kind)
    status.write("running", 0.0, "loading the model and the data", force=True)
    try:
        run.quality_cancel_path.unlink(missing_ok=True)
        path = run.require_latest_weights()
        device = evaluation_device(device)
        ckpt = load_checkpoint(path, device=device)
        model = model_from_checkpoint(ckpt, device=device)
        info = run.info()
        data = load_dataset(run.dataset(), root=data_root or (info.get("train_config") or {}).get("data_root"),
                            device=device, download=False)
        step = ckpt.step
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001 - recorded, shown in the panel, never a traceback on the page
        record = make_record(settings.kind, int(run.state().get("step") or 0), error=_error_text(e),
                             settings=settings)
        try:
            save_record(run, record)
        except OSError:
            pass
        status.write("failed", 1.0, record["error"], force=True)
        return record
    evaluator = QualityEvaluator(data, cache_dir=cache_dir, cancelled=run.quality_cancel_path.exists)
    record = run_evaluation(run, evaluator, model, settings, step, on_progress=progress, on_plan=on_plan,
                            checkpoint=path.name)
    if settings.kind == "cheap":  # run_evaluation keeps no status for cheap ones: end the 'running' written above,
        # or a caller that lives on (genlib.api.evaluate, the thread backend) would hold the run as if evaluating
        state = "done" if record["error"] is None else ("cancelled" if record.get("cancelled") else "failed")
        status.write(state, 1.0, record["error"] or "done", force=True, step=record["step"])
    return record


# the figures of each model's likelihoods, for the command line's per-model groups ("rbm", "vae": the models that
# declare a likelihood; "samples")
SAMPLE_KEYS = ("frechet_distance", "frechet_floor", "n_samples", "n_floor", "class_histogram", "class_names",
               "class_entropy", "class_max_entropy", "classes_seen", "class_min_share", "class_max_share",
               "classifier_accuracy")


def result_line(run: Any, record: dict[str, Any], *, device: Any = None) -> dict[str, Any]:
    """What `python -m genlib evaluate` prints last: the record as stored (less its traceback), the run's identity,
    and the figures grouped as that command's first version printed them ("rbm" or "vae", "samples")."""
    info = run.info()
    model = info.get("model")
    figures = record.get("figures") or {}
    out = {k: v for k, v in record.items() if k != "traceback"}
    out.update(run_id=run.id, run_dir=str(run.path), model=model, dataset=run_dataset(info),
               quick=record.get("kind") == "cheap")
    if device is not None:
        out["device"] = str(device)
    if model in model_names() and model_class(model).likelihood is not None and record.get("error") is None:
        out[model] = {k: v for k, v in figures.items() if k not in SAMPLE_KEYS and k != "samples_skipped"}
    if "frechet_distance" in figures:
        out["samples"] = {k: figures[k] for k in SAMPLE_KEYS if k in figures}
        out["classifier"] = {"test_accuracy": figures.get("classifier_accuracy"), "dataset": run_dataset(info)}
    if figures.get("samples_skipped"):
        out["samples_skipped"] = figures["samples_skipped"]
    return out


def evaluation_running(run: Any) -> bool:
    """Whether a final or full evaluation of `run` is under way: its status is fresh and its process alive (a pid
    checked on its own host only; genlib.runs.store.Run.evaluation_owner)."""
    return run.evaluation_owner() is not None


def start_evaluation(run: Any, kind: str = "full", *, backend: str = "process") -> Any:
    """Start evaluating a saved run in the background (a `python -m genlib.quality.records` process, or a thread); returns
    the Popen or Thread. The caller keeps it, to reap it; progress and results go to the run folder."""
    settings = settings_for(kind)
    if evaluation_running(run):
        raise ValueError(f"an evaluation of run {run.id} is already running")
    try:  # a cancel left over from an earlier evaluation must not cancel this one (its process clears it late)
        run.quality_cancel_path.unlink(missing_ok=True)
    except OSError:
        pass
    status = _Status(run, kind)
    status.write("running", 0.0, "starting", force=True)  # seen at once, before the process is up
    try:
        if backend == "thread":
            t = threading.Thread(target=evaluate_saved_run, args=(run, settings), name=f"genlib-eval-{run.id}",
                                 daemon=True)
            t.start()
            return t
        import subprocess

        with open(run.path / "quality.log", "ab") as log:
            return subprocess.Popen([sys.executable, "-m", "genlib.quality.records", str(run.path), "--kind", kind],
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=dict(os.environ, PYTHONUNBUFFERED="1"), cwd=os.getcwd(),
                                    start_new_session=True)
    except (OSError, RuntimeError) as e:  # no process or thread to be had: say so, and leave no 'running' behind
        status.write("failed", 1.0, f"could not start: {e}", force=True)
        raise OSError(f"the evaluation could not start: {e}") from e


def main(argv: list[str] | None = None) -> int:
    """`python -m genlib.quality.records RUN_DIR [--kind full|final|cheap]`: evaluate and record; the record as JSON last."""
    import argparse
    import json

    from genlib.runs.store import open_run

    p = argparse.ArgumentParser(prog="python -m genlib.quality.records", description=main.__doc__)
    p.add_argument("run_dir")
    p.add_argument("--kind", choices=KINDS, default="full")
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-root")
    p.add_argument("--nice", type=int, default=5, help="lower this process's priority (training comes first)")
    args = p.parse_args(argv)
    from genlib.jobs.priority import lower_priority

    lowered = lower_priority(args.nice)  # training and the server come first
    if lowered:
        print("; ".join(lowered), file=sys.stderr, flush=True)
    run = open_run(args.run_dir)
    record = evaluate_saved_run(run, settings_for(args.kind), device=args.device, data_root=args.data_root,
                                progress=lambda f, m: print(f"{f:4.0%} {m}", file=sys.stderr, flush=True))
    print(json.dumps(result_line(run, record, device=args.device), default=str))
    return 0 if record["error"] is None else 1


if __name__ == "__main__":
    raise SystemExit(main())
