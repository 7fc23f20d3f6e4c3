"""Quality figures of a model while it trains and when it ends, as flat dicts of figures with their uncertainties: the
RBM's AIS test log-likelihood and pseudo-log-likelihood (Salakhutdinov & Murray 2008; Besag 1975), the VAE's negative
ELBO and IWAE bound (Burda et al. 2016), and the Fréchet distance and class histogram of any model's samples in
genlib's classifier's feature space (Heusel et al. 2017), recorded in the run folder.

Three settings (genlib/quality_settings.py): CHEAP runs on a time cadence inside the training worker (at most ~10%
of its time, see worker.py), FINAL once when a run finishes, FULL (the papers' settings) when asked for from the
dashboard or a script. Where the
classifier comes from: a cheap evaluation only uses a cached one (it never holds training up for the ~80 s that
training it on MNIST takes on two CPU cores); the first final or full evaluation that needs it trains and caches it,
in the background job, with its progress shown in the quality panel.

Records: every evaluation appends one JSON line to the run's quality.jsonl (step, time, settings, figures, or the
error); final and full ones also replace quality.json atomically. An evaluation that fails records its error and
never fails the training job.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

from genlib.io import append_jsonl, atomic_write_json
# the settings and figure labels live in genlib.quality_settings; imported here for this module and its callers
from genlib.quality_settings import (CHEAP, FIGURES, FIGURES_BY_KEY, FINAL, FULL, KINDS, Figure,  # noqa: F401
                                     QualitySettings, settings_for)

ProgressFn = Callable[[float, str], None]  # (fraction done in [0, 1], message)
STATUS_WRITE_S = 0.5  # the evaluation status file is rewritten at most this often
STATUS_STALE_S = 300.0  # a 'running' status not refreshed for this long belongs to an evaluation that died




class EvaluationCancelled(RuntimeError):
    """The evaluation was asked to stop (the run's Stop button, or the quality panel's Cancel)."""


# ---- evaluating a model ----

class QualityEvaluator:
    """Evaluates models on one dataset again and again, keeping what does not change between calls: the binarised
    test images, the RBM's base rates, the classifier and the real images' feature statistics."""

    def __init__(self, data: Any, *, cache_dir: Path | str | None = None, progress: ProgressFn | None = None,
                 cancelled: Callable[[], bool] | None = None) -> None:
        self.data = data  # genlib.data.ImageData, on any device
        self.cache_dir = cache_dir
        self.progress = progress
        self.cancelled = cancelled
        self._memo: dict[Any, Any] = {}
        self._classifier: tuple[Any, dict] | None = None

    # the progress callback, which is also where a cancel request is noticed
    def _stage(self, name: str) -> ProgressFn:
        def report(fraction: float, message: str) -> None:
            if self.cancelled is not None and self.cancelled():
                raise EvaluationCancelled(f"cancelled during {name}")
            if self.progress is not None:
                self.progress(fraction, f"{name}: {message}")
        return report

    def evaluate(self, model: Any, settings: QualitySettings) -> dict[str, Any]:
        """The figures of `model` as one flat dict: values, their standard errors ('_se'), and how they were made."""
        if model.device.type == "mps":  # float64 (AIS, logsumexps) is missing on Apple GPUs: evaluate a CPU copy
            copy = type(model)(model.config)
            copy.load_state_dict(model.state_dict())
            model = copy.to("cpu")
        out: dict[str, Any] = {}
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                if model.name == "rbm":
                    out.update(self._rbm(model, settings))
                elif model.name == "vae":
                    out.update(self._vae(model, settings))
                if settings.scores_samples(model.name):
                    out.update(self._samples(model, settings))
                elif settings.n_samples > 0:
                    out["samples_skipped"] = (f"{settings.kind} evaluations leave out the {model.name.upper()}'s "
                                              "samples (drawing them costs more than they may take); the full "
                                              "evaluation scores them")
        finally:
            model.train(was_training)
        return out

    def _on(self, key: str, device: torch.device, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        """A cached tensor on `device`."""
        k = (key, str(device))
        if k not in self._memo:
            self._memo[k] = make().to(device)
        return self._memo[k]

    def _rbm(self, rbm: Any, s: QualitySettings) -> dict[str, Any]:
        from genlib.evaluate_rbm import (AISConfig, ais_log_partition, base_rate_biases, binarized_test_set,
                                         log_partition_exact, pseudo_log_likelihood, unnormalized_log_prob)

        device = rbm.W.device
        x_test = self.data.x_test if s.n_test is None else self.data.x_test[:s.n_test]
        # the same fixed bits as genlib.evaluate_rbm's defaults (stochastic binarisation, seed 0), so figures agree
        v = self._on(f"rbm-test-{s.n_test}", device, lambda: binarized_test_set(x_test, "stochastic", 0))  # (N, n_v)
        b_a = self._on("rbm-base-rates", torch.device("cpu"), lambda: base_rate_biases(self.data.x_train))
        every = max(1, s.ais_steps // 40)
        ais = ais_log_partition(rbm, b_a, AISConfig(n_steps=s.ais_steps, n_chains=s.ais_chains, seed=s.seed,
                                                    progress_every=every), progress=self._stage("AIS"))
        unnorm = unnormalized_log_prob(rbm, v)  # (N,) float64: -F(v)
        n = unnorm.shape[0]
        se_test = float(unnorm.std() / math.sqrt(n)) if n > 1 else 0.0
        pll = pseudo_log_likelihood(rbm, v, generator=torch.Generator().manual_seed(1))  # (N,)
        mean = float(unnorm.mean())
        out = {
            "test_log_likelihood": mean - ais.log_z,
            # two independent errors: log Z's (AIS, across chains) and the test-set mean's (across images)
            "test_log_likelihood_se": math.sqrt(ais.log_z_std ** 2 + se_test ** 2),
            "test_log_likelihood_lo": mean - ais.log_z_hi,  # the paper's ±3σ range of log Z, ends swapped
            "test_log_likelihood_hi": None if ais.log_z_lo == -math.inf else mean - ais.log_z_lo,
            "log_z": ais.log_z, "log_z_std": ais.log_z_std, "ais_ess": ais.ess,
            "ais_steps": s.ais_steps, "ais_chains": s.ais_chains,
            "pseudo_log_likelihood": float(pll.mean()),
            "pseudo_log_likelihood_se": float(pll.std() / math.sqrt(n)) if n > 1 else 0.0,
            "n_test": int(n),
        }
        if min(rbm.W.shape) <= s.exact_max_units:
            log_z = log_partition_exact(rbm, max_units=s.exact_max_units)
            out["log_z_exact"] = log_z
            out["test_log_likelihood_exact"] = mean - log_z
        return out

    def _vae(self, vae: Any, s: QualitySettings) -> dict[str, Any]:
        from genlib.evaluate_vae import VAEEvalConfig, evaluate_vae

        r = evaluate_vae(vae, self.data.x_test, VAEEvalConfig(k=s.iwae_k, n_test=s.vae_n_test,
                                                              sample_seed=s.seed + 1), progress=self._stage("IWAE"))
        return {"neg_elbo": r["neg_elbo"], "neg_elbo_se": r["neg_elbo_se"], "iwae_nll": r["iwae_nll"],
                "iwae_nll_se": r["iwae_nll_se"], "iwae_k": r["iwae_k"], "vae_n_test": r["n_test"],
                "comparable": r["comparable"]}

    def classifier(self, train: bool) -> tuple[Any, dict] | None:
        """The dataset's classifier: kept once found; from the cache; trained now only when `train`."""
        if self._classifier is None:
            from genlib.classifier import cached_classifier, ensure_classifier

            if train:
                with torch.enable_grad():  # evaluate() runs under no_grad; training the classifier needs gradients
                    self._classifier = ensure_classifier(self.data.to("cpu"), cache_dir=self.cache_dir,
                                                         progress=self._stage("classifier"))
            else:
                self._classifier = cached_classifier(self.data.name, self.cache_dir)
        return self._classifier

    def _reference(self, clf: Any, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, float, int]:
        """(mean, covariance) of the test images' features, and the train-vs-test floor at n images (cached)."""
        from genlib.evaluate_samples import classifier_outputs, frechet_distance_from_stats, gaussian_stats

        if "ref" not in self._memo:
            f_test, _ = classifier_outputs(clf, self.data.x_test)
            self._memo["ref"] = gaussian_stats(f_test)
        mu, cov = self._memo["ref"]
        key = ("floor", n, seed)
        if key not in self._memo:
            x_train = self.data.x_train
            pick = torch.randperm(x_train.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
            f_train, _ = classifier_outputs(clf, x_train[pick.to(x_train.device)])
            self._memo[key] = (frechet_distance_from_stats(*gaussian_stats(f_train), mu, cov), int(pick.shape[0]))
        floor, n_floor = self._memo[key]
        return mu, cov, floor, n_floor

    def _samples(self, model: Any, s: QualitySettings) -> dict[str, Any]:
        from genlib.evaluate_samples import (classifier_outputs, frechet_distance_from_stats, gaussian_stats,
                                             generate, histogram_summary)

        if tuple(self.data.image_shape) != (1, 28, 28):
            return {"samples_skipped": f"the classifier takes 1x28x28 images, not {tuple(self.data.image_shape)}"}
        found = self.classifier(s.train_classifier)
        if found is None:
            return {"samples_skipped": f"no {self.data.name} classifier is cached yet: the first final or full "
                                       "evaluation trains it (once)"}
        clf, report = found
        # no more samples than training images: the floor compares as many training images with the test set
        n = min(s.n_samples, int(self.data.x_train.shape[0]))
        samples = generate(model, n, seed=s.seed, progress=self._stage("samples"))  # (n, 1, 28, 28)
        f_gen, preds = classifier_outputs(clf, samples)
        mu, cov, floor, n_floor = self._reference(clf, n, s.seed)
        counts = torch.bincount(preds, minlength=clf.config.n_classes).tolist()
        summary = histogram_summary(counts)
        return {"frechet_distance": frechet_distance_from_stats(*gaussian_stats(f_gen), mu, cov),
                "frechet_floor": floor, "n_samples": n, "n_floor": n_floor,
                "class_histogram": counts, "class_names": list(self.data.classes)[:len(counts)],
                "class_entropy": summary["entropy"], "class_max_entropy": summary["max_entropy"],
                "classes_seen": summary["classes_seen"], "class_min_share": summary["min_share"],
                "class_max_share": summary["max_share"],
                "classifier_accuracy": report.get("test_accuracy")}


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
    from genlib.checkpoints import load_checkpoint, model_from_checkpoint
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
    from genlib.runs import _pid_alive

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
    """Start evaluating a saved run in the background (a `python -m genlib.quality` process, or a thread); returns
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
            return subprocess.Popen([sys.executable, "-m", "genlib.quality", str(run.path), "--kind", kind],
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=dict(os.environ, PYTHONUNBUFFERED="1"), cwd=os.getcwd(),
                                    start_new_session=True)
    except (OSError, RuntimeError) as e:  # no process or thread to be had: say so, and leave no 'running' behind
        status.write("failed", 1.0, f"could not start: {e}", force=True)
        raise OSError(f"the evaluation could not start: {e}") from e


def main(argv: list[str] | None = None) -> int:
    """`python -m genlib.quality RUN_DIR [--kind full|final|cheap]`: evaluate and record; the record as JSON last."""
    import argparse
    import json

    from genlib.runs import open_run

    p = argparse.ArgumentParser(prog="python -m genlib.quality", description=main.__doc__)
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
