"""Quality figures of a model while it trains and when it ends, as flat dicts of figures with their uncertainties: the
RBM's AIS test log-likelihood and pseudo-log-likelihood (Salakhutdinov & Murray 2008; Besag 1975), the VAE's negative
ELBO and IWAE bound (Burda et al. 2016), and the Fréchet distance and class histogram of any model's samples in
genlib's classifier's feature space (Heusel et al. 2017), recorded in the run folder.

This is genlib's one evaluation path: the training worker, `python -m genlib evaluate`, genlib.evaluate, the
dashboard's quality panel and scripts/results_table.py all use it and store the same record. Three settings
(genlib/quality/settings.py): CHEAP runs on a time cadence inside the training worker (at most ~10% of its time, see
worker.py), FINAL once when a dashboard run finishes (the CLI's `train --evaluate` chooses), FULL (the papers'
settings) when asked for from the dashboard, the command line or a script. Where the
classifier comes from: a cheap evaluation only uses a cached one (it never holds training up for the ~80 s that
training it on MNIST takes on two CPU cores); the first final or full evaluation that needs it trains and caches it,
in the background job, with its progress shown in the quality panel.

Recording them in a run folder, the worker's cadence and background evaluations: genlib/quality/records.py.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import torch

from genlib.quality.settings import QualitySettings

ProgressFn = Callable[[float, str], None]  # (fraction done in [0, 1], message)


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
                # the model's own declaration says how its likelihood is estimated (GenerativeModel.likelihood)
                if model.likelihood is not None:
                    out.update(self.LIKELIHOODS[model.likelihood](self, model, settings))
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

    def _ais(self, rbm: Any, s: QualitySettings) -> dict[str, Any]:
        """The RBM's likelihood figures: AIS test log-likelihood (log Z exact too when small) and the PLL."""
        from genlib.quality.ais import (AISConfig, ais_log_partition, base_rate_biases, binarized_test_set,
                                         log_partition_exact, pseudo_log_likelihood, unnormalized_log_prob)

        device = rbm.W.device
        x_test = self.data.x_test if s.n_test is None else self.data.x_test[:s.n_test]
        # the same fixed bits as genlib.quality.ais's defaults (stochastic binarisation, seed 0), so figures agree
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

    def _iwae(self, vae: Any, s: QualitySettings) -> dict[str, Any]:
        """The VAE's likelihood figures: test negative ELBO and IWAE bound."""
        from genlib.quality.iwae import VAEEvalConfig, evaluate_vae

        r = evaluate_vae(vae, self.data.x_test, VAEEvalConfig(k=s.iwae_k, n_test=s.vae_n_test,
                                                              sample_seed=s.seed + 1), progress=self._stage("IWAE"))
        return {"neg_elbo": r["neg_elbo"], "neg_elbo_se": r["neg_elbo_se"], "iwae_nll": r["iwae_nll"],
                "iwae_nll_se": r["iwae_nll_se"], "iwae_k": r["iwae_k"], "vae_n_test": r["n_test"],
                "comparable": r["comparable"]}

    # a model's `likelihood` declaration -> the method that computes its figures
    LIKELIHOODS: dict[str, Callable[..., dict[str, Any]]] = {"ais": _ais, "iwae": _iwae}

    def classifier(self, train: bool) -> tuple[Any, dict] | None:
        """The dataset's classifier: kept once found; from the cache; trained now only when `train`."""
        if self._classifier is None:
            from genlib.quality.classifier import cached_classifier, ensure_classifier

            if train:
                with torch.enable_grad():  # evaluate() runs under no_grad; training the classifier needs gradients
                    self._classifier = ensure_classifier(self.data.to("cpu"), cache_dir=self.cache_dir,
                                                         progress=self._stage("classifier"))
            else:
                self._classifier = cached_classifier(self.data.name, self.cache_dir)
        return self._classifier

    def _reference(self, clf: Any, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, float, int]:
        """(mean, covariance) of the test images' features, and the train-vs-test floor at n images (cached)."""
        from genlib.quality.frechet import classifier_outputs, frechet_distance_from_stats, gaussian_stats

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
        from genlib.quality.frechet import (classifier_outputs, frechet_distance_from_stats, gaussian_stats,
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
