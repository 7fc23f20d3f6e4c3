"""Quality figures of a trained run, per model: the RBM's test log-likelihood by AIS (Salakhutdinov & Murray 2008) and
pseudo-log-likelihood, the VAE's negative ELBO and IWAE bound (Burda et al. 2016), and for every model the Fréchet
distance and class histogram of its samples in genlib's classifier's feature space (Heusel et al. 2017).

"Quick" settings cost seconds to a minute on a CPU, for periodic use during training; the full settings are the
papers' (14,500 AIS distributions x 100 chains, k = 5,000, 10,000 samples) for the figures quoted at the end.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from genlib.models.base import check

ProgressFn = Callable[[float, str], None]  # (fraction done in [0, 1], message)


@dataclass(frozen=True, kw_only=True)
class EvalSettings:
    """How hard the evaluation tries; QUICK and FULL below, or either with fields replaced."""

    ais_steps: int  # intermediate distributions of AIS (the paper's schedule shape)
    ais_chains: int  # parallel AIS runs
    iwae_k: int  # importance samples per test image
    n_samples: int  # generated images for the Fréchet distance and the class histogram
    n_test: int | None = None  # test images for the likelihood figures (None: all)
    seed: int = 0  # of the AIS chains, the IWAE draws and the samples

    def __post_init__(self) -> None:
        check(self.ais_steps >= 1 and self.ais_chains >= 2, "ais_steps must be >= 1 and ais_chains >= 2")
        check(self.iwae_k >= 1, f"iwae_k must be >= 1, got {self.iwae_k}")
        check(self.n_samples >= 2, f"n_samples must be >= 2, got {self.n_samples}")
        check(self.n_test is None or self.n_test >= 2, f"n_test must be >= 2, got {self.n_test}")


QUICK = EvalSettings(ais_steps=1_000, ais_chains=100, iwae_k=50, n_samples=1_000)
FULL = EvalSettings(ais_steps=14_500, ais_chains=100, iwae_k=5_000, n_samples=10_000)


def settings_for(quick: bool, **overrides: Any) -> EvalSettings:
    """QUICK or FULL with the given fields replaced (None values ignored)."""
    return dataclasses.replace(QUICK if quick else FULL, **{k: v for k, v in overrides.items() if v is not None})


def _stage(progress: ProgressFn | None, name: str) -> ProgressFn | None:
    """A progress callback that prefixes its messages with the stage's name."""
    if progress is None:
        return None
    return lambda fraction, message: progress(fraction, f"{name}: {message}")


@torch.no_grad()
def evaluate_model(model: Any, data: Any, settings: EvalSettings, *, classifier: Any = None,
                   progress: ProgressFn | None = None) -> dict[str, Any]:
    """The figures of one model on `data` (genlib.data.ImageData, any device) as a JSON-able dict.

    Keys: "rbm" or "vae" with the likelihood figures (none for the GAN, which has no likelihood), and "samples"
    with the Fréchet distance and class histogram when a classifier is given.
    """
    out: dict[str, Any] = {}
    was_training = model.training
    model.eval()
    try:
        if model.name == "rbm":
            from genlib.quality.ais import AISConfig, RBMEvalConfig, evaluate_rbm

            cfg = RBMEvalConfig(ais=AISConfig(n_steps=settings.ais_steps, n_chains=settings.ais_chains,
                                              seed=settings.seed), n_test=settings.n_test)
            out["rbm"] = evaluate_rbm(model, data.x_train, data.x_test, cfg, progress=_stage(progress, "RBM"))
        elif model.name == "vae":
            from genlib.quality.iwae import VAEEvalConfig, evaluate_vae

            cfg = VAEEvalConfig(k=settings.iwae_k, n_test=settings.n_test, sample_seed=settings.seed + 1)
            out["vae"] = evaluate_vae(model, data.x_test, cfg, progress=_stage(progress, "VAE"))
        if classifier is not None:
            from genlib.quality.frechet import sample_quality

            out["samples"] = sample_quality(model, classifier, data.x_train, data.x_test, n=settings.n_samples,
                                            seed=settings.seed, progress=_stage(progress, "samples"))
    finally:
        model.train(was_training)
    return out


def evaluate_run(run: Any, *, quick: bool, device: torch.device | str = "auto", data_root: Path | str | None = None,
                 cache_dir: Path | str | None = None, train_classifier: bool = False,
                 settings: EvalSettings | None = None, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Evaluate a run folder's last checkpoint (else its snapshot) on the run's dataset; returns a JSON-able dict.

    `settings` default to QUICK or FULL by `quick`. The sample figures need the dataset's classifier: used when
    cached in `cache_dir`, trained first (a few CPU minutes for MNIST) when `train_classifier`, else skipped with
    the reason in "samples_skipped". `data_root` defaults to the run's own, then $GENLIB_DATA_ROOT.
    """
    from genlib.runs.checkpoints import load_checkpoint, model_from_checkpoint
    from genlib.quality.classifier import cached_classifier, ensure_classifier
    from genlib.data import load_dataset
    from genlib.devices import resolve_device

    t0 = time.perf_counter()
    settings = settings or settings_for(quick)
    device = resolve_device(device) if isinstance(device, str) else torch.device(device)
    if device.type == "mps":  # the AIS weights and logsumexps are float64, which Apple's GPUs lack
        device = torch.device("cpu")
    path = run.checkpoint_path if run.checkpoint_path.exists() else run.snapshot_path
    if not path.exists():
        raise FileNotFoundError(f"run {run.id} has no checkpoint yet")
    ckpt = load_checkpoint(path, device=device)
    model = model_from_checkpoint(ckpt, device=device)
    info = run.info()
    train_config = info.get("train_config") or {}
    dataset = train_config.get("dataset") or info.get("dataset") or "mnist"
    root = data_root or train_config.get("data_root")
    if progress is not None:
        progress(0.0, f"loading {dataset}")
    data = load_dataset(dataset, root=root, device=device)

    out: dict[str, Any] = {"run_id": run.id, "run_dir": str(run.path), "model": model.name, "step": ckpt.step,
                           "checkpoint": path.name, "dataset": dataset, "device": str(device), "quick": quick,
                           "settings": dataclasses.asdict(settings)}
    classifier = None
    if tuple(data.image_shape) == (1, 28, 28):
        found = (ensure_classifier(data, cache_dir=cache_dir, device=device, progress=_stage(progress, "classifier"))
                 if train_classifier else cached_classifier(dataset, cache_dir, device=device))
        if found is not None:
            classifier, report = found
            out["classifier"] = {"test_accuracy": report.get("test_accuracy"), "dataset": report.get("dataset")}
        else:
            out["samples_skipped"] = (f"no {dataset} classifier is cached; pass train_classifier=True "
                                      "(CLI: --train-classifier) to train one once")
    else:
        out["samples_skipped"] = f"the classifier takes 1x28x28 images, not {data.image_shape}"
    out.update(evaluate_model(model, data, settings, classifier=classifier, progress=progress))
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out
