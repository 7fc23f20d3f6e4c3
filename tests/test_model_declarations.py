"""A model is declared once, in its module and its registry entry: the command line's flags, the quality evaluation's
likelihood, its title and its form come from that declaration (genlib.config's field bounds and Option, the model
class's `title` and `likelihood`), not from tables keyed by model name elsewhere."""

import argparse
import math
import sys
from dataclasses import dataclass

import pytest
import torch
from torch import nn

import genlib.models as registry
from genlib.cli import build_parser, model_flags, train_configs
from genlib.config import check_declared, number, whole
from genlib.data import load_dataset
from genlib.models import GenerativeModel, build_model, model_class
from genlib.models.rbm import RBM, RBMConfig
from genlib.quality.estimate import estimate_stages
from genlib.quality.evaluator import QualityEvaluator
from genlib.quality.settings import FIGURES, settings_for

# ---- the stability contract: the train command's flags as they were when the table in cli.py was hand-written ----

TODAYS_TRAIN_OPTIONS = {
    "--adam-beta1", "--batch-size", "--beta", "--binarize", "--buffer-size", "--centering", "--channels",
    "--channels-last", "--checkpoint-every-s", "--data-noise", "--data-root", "--dataset", "--decoder", "--device",
    "--dropout", "--ema", "--epochs", "--evaluate", "--grad-clip", "--help", "--hidden", "--init-std", "--k",
    "--langevin-noise", "--langevin-steps", "--latent", "--leaky-slope", "--live-every-s", "--log-every", "--lr",
    "--lr-decay-steps", "--max-steps", "--momentum", "--n-samples", "--no-channels-last", "--noise-dim",
    "--param-clip", "--pcd", "--precision", "--preset", "--quiet", "--reg-weight", "--reinit", "--resume",
    "--runs-dir", "--sample-seed", "--sample-steps", "--seed", "--snapshot-every-s", "--step-size", "--threads",
    "--visible-bias", "--weight-decay", "--widths", "-h",
    "--spectral-norm"}  # added with the EBM's spectral normalisation (7 December 2026)
TODAYS_MODEL_FLAGS = {  # flag -> config field, per model (cli.py's former MODEL_FLAGS)
    "rbm": {"hidden": "n_hidden", "k": "k", "pcd": "persistent", "momentum": "momentum",
            "weight_decay": "weight_decay", "binarize": "binarize", "centering": "centering",
            "init_std": "init_std", "sample_steps": "sample_steps", "lr_decay_steps": "lr_decay_steps",
            "visible_bias": "visible_bias"},
    "vae": {"hidden": "hidden", "latent": "latent", "decoder": "decoder", "beta": "beta"},
    "gan": {"widths": "preset", "noise_dim": "noise_dim", "channels_last": "channels_last",
            "leaky_slope": "leaky_slope", "dropout": "dropout", "adam_beta1": "adam_beta1"},
    "ebm": {"langevin_steps": "langevin_steps", "step_size": "step_size", "langevin_noise": "noise",
            "buffer_size": "buffer_size", "reg_weight": "reg_weight", "sample_steps": "sample_steps",
            "channels": "channels", "hidden": "hidden", "grad_clip": "grad_clip", "reinit": "reinit",
            "data_noise": "data_noise", "param_clip": "param_clip", "adam_beta1": "adam_beta1",
            "spectral_norm": "spectral_norm"},
}
# how each model flag parsed before: argparse action, type, choices
INT, FLOAT = ("_StoreAction", "int", None), ("_StoreAction", "float", None)
TODAYS_FLAG_KINDS = {
    "hidden": INT, "init_std": FLOAT, "lr_decay_steps": INT, "k": INT, "pcd": ("_StoreConstAction", None, None),
    "momentum": FLOAT, "weight_decay": FLOAT, "binarize": ("_StoreAction", None, ("stochastic", "threshold")),
    "centering": ("_StoreConstAction", None, None), "latent": INT,
    "decoder": ("_StoreAction", None, ("bernoulli", "gaussian")), "beta": FLOAT,
    "widths": ("_StoreAction", None, ("seed", "fast")), "leaky_slope": FLOAT, "dropout": FLOAT, "adam_beta1": FLOAT,
    "noise_dim": INT, "channels_last": ("BooleanOptionalAction", None, None), "langevin_steps": INT,
    "step_size": FLOAT, "langevin_noise": FLOAT, "buffer_size": INT, "reg_weight": FLOAT, "sample_steps": INT,
    "channels": ("_StoreAction", "_int_tuple", None), "grad_clip": FLOAT, "reinit": FLOAT, "data_noise": FLOAT,
    "param_clip": FLOAT, "visible_bias": ("_StoreAction", None, ("zero", "base_rate")),
    "spectral_norm": ("_StoreConstAction", None, None)}


def train_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    return (parser or build_parser())._subparsers._group_actions[0].choices["train"]


def test_the_train_command_keeps_todays_flags():
    train = train_parser()
    assert {o for a in train._actions for o in a.option_strings} == TODAYS_TRAIN_OPTIONS
    assert model_flags() == TODAYS_MODEL_FLAGS
    kinds = {a.dest: (type(a).__name__, getattr(a.type, "__name__", None), None if a.choices is None
                      else tuple(a.choices)) for a in train._actions if a.dest in TODAYS_FLAG_KINDS}
    assert kinds == TODAYS_FLAG_KINDS
    assert next(a for a in train._actions if a.dest == "model").choices == sorted(TODAYS_MODEL_FLAGS)


def test_declared_flags_set_the_config_and_refuse_another_models():
    def model_config(*argv):
        args = build_parser().parse_args(["train", *argv])
        return train_configs(args, args.model)[0]

    assert model_config("rbm", "--hidden", "64", "--pcd", "--centering")["n_hidden"] == 64
    assert model_config("ebm", "--channels", "8,16,32,32", "--langevin-noise", "0.01")["channels"] == (8, 16, 32, 32)
    assert model_config("gan", "--no-channels-last", "--widths", "fast")["preset"] == "fast"
    with pytest.raises(ValueError, match="--pcd is a RBM option, not a VAE one"):
        model_config("vae", "--pcd")
    with pytest.raises(ValueError, match=r"channels must be 4 ints in \[1, 512\]"):  # the same bounds as the config's
        model_config("ebm", "--channels", "8,16")


def test_titles_and_likelihoods_are_the_models_declarations():
    declared = {n: (c.title, c.likelihood, c.likelihood_bound_metric, c.one_pass_sampling)
                for n, c in ((n, model_class(n)) for n in registry.MODEL_NAMES)}
    assert declared == {"rbm": ("RBM", "ais", None, False), "vae": ("VAE", "iwae", "loss", True),
                        "gan": ("GAN", None, None, True), "ebm": ("EBM", None, None, False)}


# ---- a fifth model, registered here only: it gets flags, a form and its evaluation without edits elsewhere ----

@dataclass(frozen=True, kw_only=True)
class ToyConfig:
    image_shape: tuple[int, int, int] = (1, 28, 28)
    width: int = whole(4, 1, 64, cli="toy_width", help="units of the toy's one layer")
    wobble: float = number(0.5, 0.0, 1.0, help="how much its samples wobble")

    def __post_init__(self) -> None:
        check_declared(self)


class Toy(GenerativeModel):
    """Uniform noise with a learnable brightness: enough of a model to be registered, trained and evaluated."""

    name = "toy"
    title = "Toy"
    config_class = ToyConfig
    metric_names = ("loss",)

    def __init__(self, config: ToyConfig) -> None:
        super().__init__(config)
        self.brightness = nn.Parameter(torch.zeros(1))

    def _make_optimizers(self, lr: float) -> None:
        self.opt = torch.optim.SGD(self.parameters(), lr=lr)

    def train_step(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": torch.zeros(())}

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.rand(n, *self.config.image_shape, generator=generator)


class ToyRBM(RBM):
    """An RBM under another name: its evaluation must follow its declared likelihood ("ais"), not the name "rbm"."""

    name = "toyrbm"
    title = "Toy RBM"


@pytest.fixture
def toys(monkeypatch):
    monkeypatch.setitem(registry._REGISTRY, "toy", (__name__, "Toy", "ToyConfig"))
    monkeypatch.setitem(registry._REGISTRY, "toyrbm", (__name__, "ToyRBM", "RBMConfig"))


def test_a_registered_model_gets_its_flags(toys):
    parser = build_parser()
    toy_group = next(g for g in train_parser(parser)._action_groups if g.title == "Toy")
    assert {a.dest: a.help for a in toy_group._group_actions} == {
        "toy_width": "Toy: units of the toy's one layer", "wobble": "Toy: how much its samples wobble"}
    args = parser.parse_args(["train", "toy", "--toy-width", "7", "--wobble", "0.25", "--epochs", "3"])
    model_cfg, train_cfg = train_configs(args, "toy")
    assert model_cfg == {"image_shape": (1, 28, 28), "width": 7, "wobble": 0.25} and train_cfg.epochs == 3
    assert build_model("toy", model_cfg).config.width == 7
    with pytest.raises(ValueError, match=r"width must be an int in \[1, 64\], got 0"):
        train_configs(parser.parse_args(["train", "toy", "--toy-width", "0"]), "toy")
    with pytest.raises(ValueError, match="--toy-width is a Toy option, not a RBM one"):
        train_configs(parser.parse_args(["train", "rbm", "--toy-width", "3"]), "rbm")
    # the RBM-like toy shares the RBM's flags: listed once, its help naming both
    hidden = next(a for a in train_parser(parser)._actions if a.dest == "hidden")
    assert hidden.help == "RBM, Toy RBM: hidden units; VAE, EBM: hidden layer width"


def test_a_registered_model_gets_a_form_and_a_title(toys):
    from dashboard.model_text import model_fields, model_page, model_title

    fields = model_fields("toy")
    assert [(f.name, f.kind, f.lo, f.hi, f.help) for f in fields] == [
        ("width", "int", 1, 64, "units of the toy's one layer"), ("wobble", "float", 0.0, 1.0,
                                                                  "how much its samples wobble")]
    assert model_title("toy") == "Toy" and model_page("toy") is None  # no page file: nothing links to one
    assert model_title("rbm") == "RBM" and model_page("rbm") == "app_pages/rbm.py"
    assert model_title("flow") == "flow"  # a run of a model this version does not know keeps its name
    from dashboard.home_gallery import one_pass

    assert [one_pass(m) for m in ("toy", "vae", "gan", "rbm", "flow", None)] == [False, True, True, False, False, False]


def test_quality_dispatch_follows_the_declared_likelihood(toys):
    digits = load_dataset("digits")
    settings = settings_for("cheap", n_test=50, ais_steps=40, ais_chains=4, n_samples=0, exact_max_units=0)
    torch.manual_seed(0)
    rbm = build_model("rbm", {"n_hidden": 8})
    with torch.no_grad():
        rbm.W.normal_(0, 0.05)
    toy_rbm = build_model("toyrbm", RBMConfig(n_hidden=8))
    toy_rbm.load_state_dict(rbm.state_dict())
    evaluator = QualityEvaluator(digits)
    as_rbm, as_toy = evaluator.evaluate(rbm, settings), evaluator.evaluate(toy_rbm, settings)
    assert math.isfinite(as_toy["test_log_likelihood"]) and as_toy["ais_steps"] == 40
    assert as_toy == as_rbm  # the same figures, to the last bit, as the RBM's own
    assert evaluator.evaluate(build_model("toy"), settings) == {}  # no likelihood declared: no likelihood figures
    assert set(estimate_stages(evaluator, toy_rbm, settings)) == {"AIS"}
    assert estimate_stages(evaluator, build_model("toy"), settings) == {}
    ais_figures = {f.key for f in FIGURES if f.applies_to(ToyRBM.likelihood) and f.likelihood is not None}
    assert ais_figures == {"test_log_likelihood", "pseudo_log_likelihood"}
    assert not any(f.likelihood is not None and f.applies_to(Toy.likelihood) for f in FIGURES)


def test_two_models_may_not_give_one_flag_two_meanings(monkeypatch):
    @dataclass(frozen=True, kw_only=True)
    class ClashConfig:
        hidden: float = number(0.5, 0.0, 1.0)  # --hidden is an int for the RBM, VAE and EBM

        def __post_init__(self) -> None:
            check_declared(self)

    class Clash(Toy):
        name = "clash"
        title = "Clash"
        config_class = ClashConfig

    monkeypatch.setattr(sys.modules[__name__], "Clash", Clash, raising=False)
    monkeypatch.setitem(registry._REGISTRY, "clash", (__name__, "Clash", "ClashConfig"))
    with pytest.raises(ValueError, match="--hidden means different things for clash"):
        build_parser()
