"""How long a quality evaluation will take on this machine, from short timed probes of each of its stages (AIS,
IWAE, training the classifier, sampling), and its overall progress and time left while it runs, so that a command
line can say what it is doing before it spends a minute or more (`python -m genlib train|evaluate`).

The stages are those of genlib.quality.evaluator, whose progress messages start with the stage's name ("AIS: ...").
"""

from __future__ import annotations

import time
from typing import Any, Callable

import torch

from genlib.quality.settings import QualitySettings

STAGES = ("AIS", "IWAE", "classifier", "samples")  # in the order QualityEvaluator.evaluate runs them
STAGE_WORDS = {"AIS": "AIS", "IWAE": "IWAE", "classifier": "training the classifier once", "samples": "samples"}
AIS_PROBE_STEPS = 50  # a probe costs about 1/290 of the paper's 14,500 steps
IWAE_PROBE_IMAGES, IWAE_PROBE_K = 8, 50
SAMPLE_PROBE_N = 20
CLASSIFIER_PROBE_STEPS = 3


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def estimate_stages(evaluator: Any, model: Any, settings: QualitySettings) -> dict[str, float]:
    """Expected seconds of each stage `evaluator.evaluate(model, settings)` will run, timed here by probes of at
    most about a second in all (the probes' fixed costs make these upper-ish estimates, never lower by much)."""
    out: dict[str, float] = {}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if model.likelihood is not None:  # the stage the model's declaration picks (GenerativeModel.likelihood)
                stage, seconds = LIKELIHOOD_STAGES[model.likelihood]
                out[stage] = seconds(evaluator, model, settings)
            if settings.scores_samples(model.name) and tuple(evaluator.data.image_shape) == (1, 28, 28):
                from genlib.quality.classifier import cached_classifier

                cached = evaluator._classifier is not None or cached_classifier(evaluator.data.name,
                                                                                  evaluator.cache_dir) is not None
                if not cached and settings.train_classifier:
                    with torch.enable_grad():
                        out["classifier"] = _classifier_seconds(evaluator.data)
                if cached or settings.train_classifier:
                    n = min(settings.n_samples, int(evaluator.data.x_train.shape[0]))
                    probe = min(n, SAMPLE_PROBE_N)
                    from genlib.quality.frechet import generate

                    out["samples"] = _timed(lambda: generate(model, probe, seed=settings.seed)) * n / probe
    finally:
        model.train(was_training)
    return out


def _ais_seconds(evaluator: Any, rbm: Any, s: QualitySettings) -> float:
    from genlib.quality.ais import AISConfig, ais_log_partition, base_rate_biases

    b_a = evaluator._on("rbm-base-rates", torch.device("cpu"), lambda: base_rate_biases(evaluator.data.x_train))
    steps = min(s.ais_steps, AIS_PROBE_STEPS)
    cfg = AISConfig(n_steps=steps, n_chains=s.ais_chains, seed=s.seed)
    return _timed(lambda: ais_log_partition(rbm, b_a, cfg)) * s.ais_steps / steps


def _iwae_seconds(evaluator: Any, vae: Any, s: QualitySettings) -> float:
    from genlib.quality.iwae import VAEEvalConfig, evaluate_vae

    n_all = int(evaluator.data.x_test.shape[0])
    n = n_all if s.vae_n_test is None else min(n_all, s.vae_n_test)
    m, k = min(n, IWAE_PROBE_IMAGES), min(s.iwae_k, IWAE_PROBE_K)
    probe = _timed(lambda: evaluate_vae(vae, evaluator.data.x_test[:m], VAEEvalConfig(k=k, n_test=m)))
    return probe * (n * s.iwae_k) / (m * k)



# a model's `likelihood` declaration -> (its stage's name, the probe that times it)
LIKELIHOOD_STAGES: dict[str, tuple[str, Callable[[Any, Any, QualitySettings], float]]] = {
    "ais": ("AIS", _ais_seconds), "iwae": ("IWAE", _iwae_seconds)}

def _classifier_seconds(data: Any) -> float:
    """A few of the classifier's training steps (its architecture, batch size and optimiser), times its steps."""
    import torch.nn.functional as F

    from genlib.quality.classifier import Classifier, default_train_config

    cfg = default_train_config(data.name)
    net = Classifier()
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    xb = torch.rand(cfg.batch_size, 1, 28, 28)
    yb = torch.randint(0, 10, (cfg.batch_size,))

    def steps() -> None:
        for _ in range(CLASSIFIER_PROBE_STEPS):
            loss = F.cross_entropy(net(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    per_step = _timed(steps) / CLASSIFIER_PROBE_STEPS
    return per_step * cfg.epochs * data.steps_per_epoch(min(cfg.batch_size, int(data.x_train.shape[0])))


def describe(stages: dict[str, float]) -> str:
    """'AIS and samples, ~90 s' from the stages' expected seconds."""
    names = [STAGE_WORDS[s] for s in STAGES if s in stages] or ["nothing to compute"]
    words = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"{words}, ~{format_seconds(sum(stages.values()))}"


def format_seconds(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 10:
        return f"{seconds:.0f} s" if seconds >= 1 else "1 s"
    if seconds < 120:
        return f"{round(seconds / 5) * 5:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 600 else f"{seconds / 60:.0f} min"


class StagedProgress:
    """Turns the evaluator's per-stage progress (fraction of the stage, 'STAGE: message') into the fraction of the
    whole evaluation, weighting each stage by its expected seconds, and the time left."""

    def __init__(self, stages: dict[str, float]) -> None:
        self.stages = dict(stages)
        self.total = sum(self.stages.values()) or 1.0
        self.t0 = time.monotonic()

    def fraction(self, stage_fraction: float, message: str) -> float:
        stage = message.split(":", 1)[0]
        if stage not in self.stages:
            return 0.0
        before = sum(self.stages[s] for s in STAGES[:STAGES.index(stage)] if s in self.stages)
        return min(1.0, (before + min(max(stage_fraction, 0.0), 1.0) * self.stages[stage]) / self.total)

    def seconds_left(self, fraction: float) -> float:
        """From the pace so far once there is some, else from the estimate."""
        elapsed = time.monotonic() - self.t0
        if fraction >= 0.05 and elapsed >= 1.0:
            return elapsed * (1.0 - fraction) / fraction
        return max(0.0, self.total - elapsed)
