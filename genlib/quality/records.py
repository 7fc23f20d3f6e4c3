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
from typing import Any

import torch

from genlib.runs.io import append_jsonl, atomic_write_json
from genlib.quality.evaluator import EvaluationCancelled, ProgressFn, QualityEvaluator
from genlib.quality.settings import CHEAP, FINAL, FULL, KINDS, QualitySettings, settings_for

STATUS_WRITE_S = 0.5  # the evaluation status file is rewritten at most this often
STATUS_STALE_S = 300.0  # a 'running' status not refreshed for this long belongs to an evaluation that died


# ---- records in the run folder ----

def make_record(kind: str, step: int, figures: dict[str, Any] | None = None, *, error: str | None = None,
                seconds: float = 0.0, settings: QualitySettings | None = None, **extra: Any) -> dict[str, Any]:
    """One evaluation as stored: what, when, how long, with which settings, and the figures or the error."""
    return {"kind": kind, "step": int(step), "t": round(time.time(), 3), "seconds": round(seconds, 3),
            "settings": dataclasses.asdict(settings) if settings is not None else None,
            "figures": figures or {}, "error": error, **extra}


def save_record(run: Any, record: dict[str, Any]) -> None:
    """Append to quality.jsonl; a final or full evaluation with figures also becomes quality.json (atomically)."""
    append_jsonl(run.quality_path, [record])
    if record["kind"] in ("final", "full") and record.get("error") is None:
        atomic_write_json(run.quality_summary_path, record)


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
            atomic_write_json(self.run.quality_status_path,
                              {"state": state, "kind": self.kind, "fraction": round(min(max(fraction, 0.0), 1.0), 4),
                               "message": message, "pid": os.getpid(), "updated": time.time(), **extra})
        except OSError:
            pass  # a status line is a courtesy: a full disk must not fail the evaluation for it


def run_evaluation(run: Any, evaluator: QualityEvaluator, model: Any, settings: QualitySettings, step: int,
                   *, on_progress: ProgressFn | None = None, **extra: Any) -> dict[str, Any]:
    """Evaluate, record the figures or the error, and return the record; never raises (but KeyboardInterrupt).

    A final or full evaluation also keeps quality-status.json up to date for the dashboard's progress bar.
    """
    status = _Status(run, settings.kind) if settings.kind != "cheap" else None

    def progress(fraction: float, message: str) -> None:
        if status is not None:
            status.write("running", fraction, message)
        if on_progress is not None:
            on_progress(fraction, message)

    if status is not None:
        status.write("running", 0.0, "starting", force=True)
    evaluator.progress = progress
    t0 = time.perf_counter()
    try:
        figures = evaluator.evaluate(model, settings)
        record = make_record(settings.kind, step, figures, seconds=time.perf_counter() - t0, settings=settings,
                             **extra)
    except KeyboardInterrupt:
        raise
    except EvaluationCancelled as e:
        record = make_record(settings.kind, step, error=f"cancelled: {e}", seconds=time.perf_counter() - t0,
                             settings=settings, cancelled=True, **extra)
    except Exception as e:  # noqa: BLE001 - a failed evaluation is recorded; it must never end the training job
        record = make_record(settings.kind, step, error=_error_text(e), seconds=time.perf_counter() - t0,
                             settings=settings, traceback=traceback.format_exc(limit=8), **extra)
    finally:
        evaluator.progress = None
    try:
        save_record(run, record)
    except OSError:
        pass  # a full disk: the figures are lost, the training is not
    if status is not None:
        state = "done" if record["error"] is None else ("cancelled" if record.get("cancelled") else "failed")
        status.write(state, 1.0, record["error"] or "done", force=True, step=record["step"])
    return record


class RunQuality:
    """The quality records of one training worker: CHEAP evaluations when its cadence says, FINAL at the end."""

    def __init__(self, run: Any, data: Any, *, cache_dir: Path | str | None = None) -> None:
        self.run = run
        self._poll = {"next": 0.0, "stop": False}
        self.evaluator = QualityEvaluator(data, cache_dir=cache_dir, cancelled=self._stop_requested)

    def _stop_requested(self) -> bool:
        """The run's Stop command or the panel's Cancel (its control file read at most four times a second)."""
        now = time.monotonic()
        if now >= self._poll["next"]:
            self._poll["next"] = now + 0.25
            self._poll["stop"] = self.run.control().get("command") == "stop" or self.run.quality_cancel_path.exists()
        return self._poll["stop"]

    def periodic(self, model: Any, step: int) -> dict[str, Any]:
        return run_evaluation(self.run, self.evaluator, model, CHEAP, step)

    def final(self, model: Any, step: int) -> dict[str, Any]:
        """The end-of-run evaluation; its progress also goes to the run's state message ('Stop' skips it)."""
        try:
            self.run.quality_cancel_path.unlink(missing_ok=True)
        except OSError:
            pass
        self._poll["next"] = 0.0
        last = {"t": 0.0}

        def to_state(fraction: float, message: str) -> None:
            if time.monotonic() - last["t"] >= 1.0:  # also the worker's heartbeat while it evaluates
                last["t"] = time.monotonic()
                try:
                    self.run.write_state(message=f"final evaluation ({fraction:.0%}), Stop skips it: {message}")
                except OSError:
                    pass

        return run_evaluation(self.run, self.evaluator, model, FINAL, step, on_progress=to_state)


# ---- evaluating a saved run, in the foreground or the background ----

def evaluate_saved_run(run: Any, settings: QualitySettings = FULL, *, device: torch.device | str = "cpu",
                       cache_dir: Path | str | None = None, data_root: Path | str | None = None,
                       progress: ProgressFn | None = None) -> dict[str, Any]:
    """Evaluate a run folder's last checkpoint (else its snapshot) and record it; returns the record, never raises.

    Loading problems (no checkpoint, dataset missing) are recorded as the evaluation's error too.
    """
    from genlib.runs.checkpoints import load_checkpoint, model_from_checkpoint
    from genlib.data import load_dataset

    status = _Status(run, settings.kind)
    status.write("running", 0.0, "loading the model and the data", force=True)
    try:
        run.quality_cancel_path.unlink(missing_ok=True)
        path = run.checkpoint_path if run.checkpoint_path.exists() else run.snapshot_path
        if not path.exists():
            raise FileNotFoundError(f"run {run.id} has no checkpoint yet")
        device = torch.device(device)
        ckpt = load_checkpoint(path, device=device)
        model = model_from_checkpoint(ckpt, device=device)
        info = run.info()
        tc = info.get("train_config") or {}
        data = load_dataset(tc.get("dataset") or info.get("dataset") or "mnist",
                            root=data_root or tc.get("data_root"), device=device, download=False)
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
    return run_evaluation(run, evaluator, model, settings, step, on_progress=progress, checkpoint=path.name)


def evaluation_running(run: Any) -> bool:
    """Whether a final or full evaluation of `run` is under way (its status is fresh and its process alive)."""
    from genlib.runs.store import _pid_alive

    status = run.quality_status()
    if status.get("state") != "running":
        return False
    try:
        fresh = time.time() - float(status.get("updated") or 0) < STATUS_STALE_S
    except (TypeError, ValueError):
        return False
    pid = status.get("pid")
    return fresh and (pid == os.getpid() or _pid_alive(pid))


def start_evaluation(run: Any, kind: str = "full", *, backend: str = "process") -> Any:
    """Start evaluating a saved run in the background (a `python -m genlib.quality.records` process, or a thread); returns
    the Popen or Thread. The caller keeps it, to reap it; progress and results go to the run folder."""
    settings = settings_for(kind)
    if evaluation_running(run):
        raise ValueError(f"an evaluation of run {run.id} is already running")
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
    if args.nice:
        try:
            os.nice(args.nice)
        except OSError:
            pass
    run = open_run(args.run_dir)
    record = evaluate_saved_run(run, settings_for(args.kind), device=args.device, data_root=args.data_root,
                                progress=lambda f, m: print(f"{f:4.0%} {m}", file=sys.stderr, flush=True))
    print(json.dumps({k: v for k, v in record.items() if k != "traceback"}, default=str))
    return 0 if record["error"] is None else 1


if __name__ == "__main__":
    raise SystemExit(main())
