"""Named training recipes per model: "The seed's settings" (the course's reference code, unchanged) and "Lecture: fast
and good" (chosen by measurement with scripts/time_to_quality.py on a 2-core CPU; figures in docs/time_to_quality.md).

A recipe is a model config and a train config, both plain values checked by their dataclasses; the CLI
(`python -m genlib train gan --preset lecture`), the training forms and the benchmark all read them from `PRESETS`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

RECIPE_NAMES = ("seed", "lecture")
RECIPE_TITLES = {"seed": "The seed's settings", "lecture": "Lecture: fast and good"}


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """One named recipe of one model: its config fields, its training fields and why it is what it is."""

    model: str
    name: str  # "seed" or "lecture"
    model_config: Mapping[str, Any]  # fields of the model's config dataclass; unnamed fields keep their defaults
    train_config: Mapping[str, Any]  # fields of genlib.training.TrainConfig; unnamed fields keep their defaults
    why: str  # one or two sentences: where the values come from

    def __post_init__(self) -> None:
        # read-only views, so a caller that edits what it was given cannot change the table
        object.__setattr__(self, "model_config", MappingProxyType(dict(self.model_config)))
        object.__setattr__(self, "train_config", MappingProxyType(dict(self.train_config)))

    @property
    def title(self) -> str:
        return RECIPE_TITLES.get(self.name, self.name)

    def model_values(self, **overrides: Any) -> dict[str, Any]:
        """Every field of the model's config (defaults filled in), with `overrides` (None values ignored) on top."""
        from genlib.models import make_config

        values = {**self.model_config, **{k: v for k, v in overrides.items() if v is not None}}
        return dataclasses.asdict(make_config(self.model, values))  # checks bounds and refuses unknown fields

    def train_values(self, **overrides: Any) -> dict[str, Any]:
        """Every field of TrainConfig (defaults filled in), with `overrides` (None values ignored) on top."""
        from genlib.training import TrainConfig

        values = {**self.train_config, **{k: v for k, v in overrides.items() if v is not None}}
        return dataclasses.asdict(TrainConfig(**values))


def _seed(model: str, model_config: dict[str, Any], why: str) -> Recipe:
    from genlib.training import SEED_DEFAULTS  # the one table of the seed's lr, batch size and epochs

    return Recipe(model=model, name="seed", model_config=model_config, train_config=dict(SEED_DEFAULTS[model]), why=why)


def _table() -> dict[str, dict[str, Recipe]]:
    return {
        "rbm": {
            # the seed's RBM(k=1): 784-500, W ~ N(0, 0.01^2), zero biases, plain SGD 0.1, batch 64, 10 epochs, CD-1
            # on stochastically binarised images
            "seed": _seed("rbm", {"n_hidden": 500, "k": 1, "persistent": False, "momentum": 0.0, "weight_decay": 0.0,
                                  "binarize": "stochastic", "centering": False,
                                  "visible_bias": "zero"},
                          "The seed's RBM(k=1): 500 hidden units, CD-1, plain SGD at 0.1, batch 64, 10 epochs."),
            "lecture": Recipe(
                model="rbm", name="lecture",
                model_config={"n_hidden": 500, "k": 1, "persistent": True, "centering": True, "momentum": 0.5,
                              "weight_decay": 2e-4, "visible_bias": "base_rate", "binarize": "stochastic"},
                train_config={"lr": 0.05, "batch_size": 100, "epochs": 30, "ema": 0.9995},
                why="Centred PCD-1 (Melchior et al. 2016; Tieleman 2008) with momentum 0.5 (the first phase of "
                    "Hinton's practical guide), visible biases started at the data's log-odds, weight decay 2e-4, "
                    "and samples drawn from the weights' moving average (decay 0.9995), which smooths the noise of "
                    "five times PyDeep's step size (0.05): measured through the dashboard's job path on one core "
                    "that did ~110 GFLOP/s of torch.mm, the rarest digit at 5.3-5.5% after ~116 s (three seeds, "
                    "10,000 samples each) where step 0.02 with decay 0.999 left it at 3.1-4.3% (2,000 samples), FD "
                    "25-29 against 50-63, AIS -89 nats after 2 minutes and -87.8 after 5. On a core half as fast, "
                    "where the step's sparse products summed as rows make ~20,000 steps in 2 minutes, the rarest "
                    "digit is at 5.2-6.9% (three seeds; docs/time_to_quality.md)."),
        },
        "vae": {
            # the seed's VAE: 784-512-512-8, Normal(tanh(.), 1) decoder on images shifted to [-0.5, 0.5], Adam 1e-3,
            # batch 128, 100 epochs
            "seed": _seed("vae", {"hidden": 512, "latent": 8, "decoder": "gaussian", "beta": 1.0},
                          "The seed's VAE: 512 hidden units, 8 latent dimensions, its Gaussian decoder, Adam 1e-3, "
                          "batch 128, 100 epochs."),
            "lecture": Recipe(
                model="vae", name="lecture",
                model_config={"hidden": 512, "latent": 16, "decoder": "bernoulli", "beta": 1.0},
                train_config={"lr": 2e-3, "batch_size": 128, "epochs": 20, "ema": 0.999},
                why="A Bernoulli decoder (sharp digits, a likelihood in nats of binarised images), 16 latent "
                    "dimensions and twice the seed's Adam rate: 102.8 nats after 100 s against 115.6 for latent 8 "
                    "at the seed's rate, on the same CPU; the weights' moving average (decay 0.999) shown, 1.0-1.3 "
                    "nats better than the live weights from 2 to 15 minutes (docs/time_to_quality.md)."),
        },
        "gan": {
            # the seed's DCGAN: Keras widths, Adam(1e-4) with Keras's beta1 0.9, batch 256, 30 epochs
            "seed": _seed("gan", {"preset": "seed", "noise_dim": 100, "adam_beta1": 0.9},
                          "The seed's DCGAN (2.5M parameters), Adam 1e-4 with beta1 0.9, batch 256, 30 epochs."),
            "lecture": Recipe(
                model="gan", name="lecture",
                model_config={"preset": "fast", "noise_dim": 100, "adam_beta1": 0.5, "dropout": 0.0},
                train_config={"lr": 8e-4, "batch_size": 32, "epochs": 25, "ema": 0.999},
                why="DCGAN's Adam with beta1 0.5 (Radford et al. 2016) on the widths / 4 network, with batches of 32 "
                    "(more updates per second on a CPU), the discriminator without the seed's dropout, and samples "
                    "from the generator's moving average (decay 0.999; Yazici et al. 2019), which lets the step size "
                    "go to 4x DCGAN's 2e-4. Measured on one core: without dropout FD 53-70 after ~8,000 steps (three "
                    "seeds) where the seed's dropout 0.3 had 79, and 45-51 after ~25,000; past ~50,000 steps it gets "
                    "worse, where dropout 0.1 keeps improving (docs/time_to_quality.md)."),
        },
        "ebm": {
            # the seed has no EBM: Foster's ch. 7 (Du & Mordatch 2019) settings, as SEED_DEFAULTS
            "seed": _seed("ebm", {}, "The seed has no EBM: Foster's chapter 7 (Du & Mordatch 2019) network and "
                                     "Langevin settings, Adam 1e-4, batch 128, 2 epochs."),
            "lecture": Recipe(
                model="ebm", name="lecture", model_config={"spectral_norm": True, "sample_steps": 400},
                train_config={"lr": 1e-3, "batch_size": 128, "epochs": 6, "ema": 0.99},
                why="Du & Mordatch's replay buffer, clipped Langevin steps and energy regulariser (already the "
                    "defaults) with their spectral normalisation of every layer, which lets Adam's step go to 1e-3 "
                    "(10x Foster's); samples from the weights' moving average (decay 0.99) with 400 Langevin steps "
                    "from noise (200 stop short of the thin 1s). Through the job path on one core that did 106-112 "
                    "GFLOP/s of torch.mm: FD 76-79 and every digit >= 5.7% after ~105 s, 24-36 after 5 minutes (four "
                    "runs) and 16.5 after 10, where the recipe without spectral normalisation at 1e-4 had 159 after 5 "
                    "minutes (docs/time_to_quality.md)."),
        },
    }


def presets() -> dict[str, dict[str, Recipe]]:
    """PRESETS[model][name] -> Recipe (a fresh dict each call; the recipes themselves are read-only)."""
    return _table()


def recipe(model: str, name: str) -> Recipe:
    """The recipe `name` ("seed" or "lecture") of `model`, or ValueError naming the choices."""
    table = _table()
    if model not in table:
        raise ValueError(f"no recipes for model {model!r}; models: {', '.join(table)}")
    if name not in table[model]:
        raise ValueError(f"{model} has no recipe {name!r}; choose one of {', '.join(table[model])}")
    return table[model][name]


def __getattr__(attr: str) -> Any:  # PRESETS as a module attribute, built on first use (nothing runs on import)
    if attr == "PRESETS":
        return _table()
    raise AttributeError(f"module 'genlib.presets' has no attribute {attr!r}")
