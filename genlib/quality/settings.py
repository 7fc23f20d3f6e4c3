"""How hard a quality evaluation tries (the CHEAP, FINAL and FULL settings of genlib.quality.evaluator) and the figures it
reports, as tables and charts label them: AIS and pseudo-log-likelihood (Salakhutdinov & Murray 2008; Besag 1975),
negative ELBO and IWAE (Burda et al. 2016), the Fréchet distance (Heusel et al. 2017) and the class entropy.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from genlib.config import check, check_bool, check_choice, check_int, is_int

KINDS = ("cheap", "final", "full")


@dataclass(frozen=True, kw_only=True)
class QualitySettings:
    """How hard one evaluation tries; CHEAP, FINAL and FULL below, or any of them with fields replaced."""

    kind: str  # "cheap", "final" or "full": recorded with every figure, so like is compared with like
    n_test: int | None  # test images for the RBM's figures (None: all)
    ais_steps: int  # AIS intermediate distributions (the paper's 14,500)
    ais_chains: int  # parallel AIS runs (the paper's 100)
    iwae_k: int  # importance samples per test image (the IWAE paper's 5,000)
    vae_n_test: int | None  # test images for the VAE's bounds: k decoder passes each, the costly part
    n_samples: int  # generated images for the Fréchet distance and class histogram (0: none)
    sample_models: tuple[str, ...] | None  # models whose samples are scored (None: every model)
    train_classifier: bool  # train the dataset's classifier when none is cached (minutes on MNIST)
    exact_max_units: int = 20  # also enumerate log Z exactly when the RBM's smaller layer is this small
    seed: int = 0  # of the AIS chains, the IWAE draws and the samples

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, KINDS)
        if self.n_test is not None:
            check_int("n_test", self.n_test, 2)
        check_int("ais_steps", self.ais_steps, 1, 10_000_000)
        check_int("ais_chains", self.ais_chains, 2, 1_000_000)
        check_int("iwae_k", self.iwae_k, 1, 10_000_000)
        if self.vae_n_test is not None:
            check_int("vae_n_test", self.vae_n_test, 2)
        check(is_int(self.n_samples) and (self.n_samples == 0 or self.n_samples >= 2),
              f"n_samples must be 0 (no sample figures) or at least 2, got {self.n_samples!r}")
        check(self.sample_models is None or isinstance(self.sample_models, tuple),
              f"sample_models must be None or a tuple of model names, got {self.sample_models!r}")
        check_bool("train_classifier", self.train_classifier)
        check_int("exact_max_units", self.exact_max_units, 0, 24)
        check_int("seed", self.seed, 0)

    def scores_samples(self, model_name: str) -> bool:
        return self.n_samples > 0 and (self.sample_models is None or model_name in self.sample_models)


# CHEAP costs about a second for the seed's models on MNIST on 2 idle CPU cores (RBM: 1,000 test images and a
# 500-step AIS; VAE: k = 50 on 1,000 images; GAN and VAE: 1,000 samples), so the worker's 10% budget allows one every
# ~10-20 s. The RBM's samples need 500 Gibbs steps each, more than all the rest together: they wait for FINAL.
CHEAP = QualitySettings(kind="cheap", n_test=1_000, ais_steps=500, ais_chains=32, iwae_k=50, vae_n_test=1_000,
                        n_samples=1_000, sample_models=("vae", "gan"), train_classifier=False, exact_max_units=16)
# Once, at the end of a finished run, about a minute for the seed's models on 2 cores: the paper's AIS (14,500 steps,
# 100 chains) on every test image, IWAE with k = 500 on 2,000 test images, 5,000 samples of the models whose sampling
# cost is known (the first one also trains the classifier, once).
FINAL = QualitySettings(kind="final", n_test=None, ais_steps=14_500, ais_chains=100, iwae_k=500, vae_n_test=2_000,
                        n_samples=5_000, sample_models=("rbm", "vae", "gan"), train_classifier=True)
# The papers' settings throughout, on demand: k = 5,000 on all 10,000 test images (about ten CPU minutes for the
# seed's VAE) and 10,000 samples of every model.
FULL = dataclasses.replace(FINAL, kind="full", iwae_k=5_000, vae_n_test=None, n_samples=10_000,
                           sample_models=None)


def settings_for(kind: str, **overrides: Any) -> QualitySettings:
    """CHEAP, FINAL or FULL by name, with the given fields replaced (None values ignored)."""
    base = {"cheap": CHEAP, "final": FINAL, "full": FULL}.get(kind)
    if base is None:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})


@dataclass(frozen=True)
class Figure:
    """One quality figure as tables and charts show it."""

    key: str
    label: str
    better: str  # "higher" or "lower"
    se_key: str | None = None  # the key of its standard error, if it has one
    # the models that have it: those whose `likelihood` (GenerativeModel.likelihood) is this ("ais", "iwae"); None:
    # every model whose samples are scored
    likelihood: str | None = None

    def applies_to(self, model_likelihood: str | None) -> bool:
        """Whether a model that declares `model_likelihood` has this figure."""
        return self.likelihood is None or self.likelihood == model_likelihood


FIGURES: tuple[Figure, ...] = (
    Figure("test_log_likelihood", "Test log-likelihood (AIS, nats)", "higher", "test_log_likelihood_se", "ais"),
    Figure("pseudo_log_likelihood", "Pseudo-log-likelihood (nats)", "higher", "pseudo_log_likelihood_se", "ais"),
    Figure("neg_elbo", "Negative ELBO (nats)", "lower", "neg_elbo_se", "iwae"),
    Figure("iwae_nll", "IWAE bound on -log p(x) (nats)", "lower", "iwae_nll_se", "iwae"),
    Figure("frechet_distance", "Fréchet distance", "lower"),
    Figure("frechet_floor", "Fréchet floor (train vs test)", "lower"),
    Figure("class_entropy", "Class entropy (nats)", "higher"),
)
FIGURES_BY_KEY = {f.key: f for f in FIGURES}
