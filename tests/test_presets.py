"""The named recipes (genlib/presets.py) against the configs' checks and the seed's code, and every setting reachable from
the train command's flags."""

import dataclasses

import pytest

from genlib.cli import TRAIN_FLAGS, build_parser, model_flags, train_configs
from genlib.models import MODEL_NAMES, model_class
from genlib.presets import PRESETS, RECIPE_NAMES, RECIPE_TITLES, recipe
from genlib.training import SEED_DEFAULTS, TrainConfig


def configs(*argv):
    args = build_parser().parse_args(["train", *argv])
    return train_configs(args, args.model)


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_every_preset_passes_the_config_checks(model):
    assert tuple(PRESETS[model]) == RECIPE_NAMES
    for name, r in PRESETS[model].items():
        assert r.model == model and r.name == name and r.title == RECIPE_TITLES[name] and r.why
        model_cfg = model_class(model).config_class(**{k: (tuple(v) if isinstance(v, list) else v)
                                                        for k, v in r.model_values().items()})
        train_cfg = TrainConfig(**r.train_values())
        assert dataclasses.asdict(model_cfg) == r.model_values()
        for key, value in r.model_config.items():  # nothing the recipe names is dropped or changed on the way
            assert getattr(model_cfg, key) == value, (model, name, key)
        for key, value in r.train_config.items():
            assert getattr(train_cfg, key) == value, (model, name, key)
        cls = model_class(model)
        assert train_cfg.batch_size >= getattr(cls, "min_batch_size", 1)


def test_the_seed_recipes_are_the_seed_code():
    for model in MODEL_NAMES:
        assert dict(recipe(model, "seed").train_config) == SEED_DEFAULTS[model]
    assert SEED_DEFAULTS["gan"] == {"lr": 1e-4, "batch_size": 256, "epochs": 30}  # Adam(1e-4), BATCH_SIZE, EPOCHS
    assert SEED_DEFAULTS["vae"] == {"lr": 1e-3, "batch_size": 128, "epochs": 100}
    assert SEED_DEFAULTS["rbm"] == {"lr": 0.1, "batch_size": 64, "epochs": 10}  # SGD(0.1), batch_size, range(10)
    gan = recipe("gan", "seed").model_values()
    assert (gan["preset"], gan["adam_beta1"], gan["noise_dim"]) == ("seed", 0.9, 100)  # Keras's Adam beta1
    vae = recipe("vae", "seed").model_values()
    assert (vae["hidden"], vae["latent"], vae["decoder"], vae["beta"]) == (512, 8, "gaussian", 1.0)
    rbm = recipe("rbm", "seed").model_values()
    assert (rbm["n_hidden"], rbm["k"], rbm["persistent"], rbm["momentum"], rbm["weight_decay"], rbm["centering"]) \
        == (500, 1, False, 0.0, 0.0, False)


def test_recipes_are_read_only_and_unknown_names_are_refused():
    r = recipe("gan", "lecture")
    with pytest.raises(TypeError):
        r.model_config["lr"] = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.name = "x"
    with pytest.raises(ValueError, match="seed, lecture"):
        recipe("gan", "fastest")
    with pytest.raises(ValueError, match="models"):
        recipe("flow", "seed")
    with pytest.raises(ValueError, match="no setting"):
        r.model_values(widths="x")


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_every_model_setting_has_a_flag(model):
    fields = {f.name for f in dataclasses.fields(model_class(model).config_class)} - {"image_shape"}
    assert set(model_flags()[model].values()) == fields
    options = {a.dest for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions}
    assert set(model_flags()[model]) <= options


def test_every_train_setting_has_a_flag():
    options = {a.dest for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions}
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert fields - {"dataset", "data_root", "device"} == set(TRAIN_FLAGS)
    assert fields <= options


def test_preset_flags_and_overrides():
    model_cfg, cfg = configs("gan", "--preset", "lecture")
    r = recipe("gan", "lecture")
    assert model_cfg == r.model_values() and (cfg.lr, cfg.batch_size, cfg.epochs) == (8e-4, 32, 25)
    assert model_cfg["dropout"] == 0.0 and configs("gan", "--preset", "seed")[0]["dropout"] == 0.3  # the seed's
    model_cfg, cfg = configs("gan", "--preset", "lecture", "--adam-beta1", "0.7", "--widths", "seed", "--lr", "3e-4",
                             "--snapshot-every-s", "2.5", "--n-samples", "16", "--dropout", "0.1")
    assert (model_cfg["adam_beta1"], model_cfg["preset"], model_cfg["dropout"]) == (0.7, "seed", 0.1)
    assert (cfg.lr, cfg.batch_size, cfg.snapshot_every_s, cfg.n_samples) == (3e-4, 32, 2.5, 16)
    model_cfg, cfg = configs("vae", "--preset", "seed")
    assert model_cfg["decoder"] == "gaussian" and (cfg.lr, cfg.batch_size, cfg.epochs) == (1e-3, 128, 100)
    model_cfg, cfg = configs("ebm", "--channels", "8,16,32,32", "--adam-beta1", "0.2", "--hidden", "32")
    assert (model_cfg["channels"], model_cfg["adam_beta1"], model_cfg["hidden"]) == ((8, 16, 32, 32), 0.2, 32)
    model_cfg, cfg = configs("rbm", "--preset", "lecture", "--ema", "0.99")
    assert cfg.ema == 0.99 and configs("rbm", "--preset", "seed")[1].ema == 0.0  # the seed shows its live weights
    assert (model_cfg["momentum"], cfg.lr, cfg.batch_size) == (0.5, 0.05, 100)  # the measured recipe, from the CLI
    assert configs("rbm", "--preset", "lecture")[1].ema == 0.9995
    _, ebm_cfg = configs("ebm", "--preset", "lecture")
    assert (ebm_cfg.ema, ebm_cfg.epochs) == (0.99, 6)  # long enough for its 10-minute figure on the faster core
    model_cfg, _ = configs("rbm", "--init-std", "0.05", "--sample-steps", "100", "--lr-decay-steps", "1000")
    assert (model_cfg["init_std"], model_cfg["sample_steps"], model_cfg["lr_decay_steps"]) == (0.05, 100, 1000)


def test_no_preset_and_the_old_gan_preset_fast_train_as_before():
    model_cfg, cfg = configs("gan")
    assert model_cfg["preset"] == "seed" and (cfg.lr, cfg.batch_size, cfg.epochs) == (1e-4, 256, 30)
    model_cfg, cfg = configs("gan", "--preset", "fast")
    assert (model_cfg["preset"], model_cfg["adam_beta1"]) == ("fast", 0.9) and cfg.batch_size == 256
    model_cfg, _ = configs("vae")
    assert model_cfg["decoder"] == "bernoulli"  # the model's default when no recipe is named


def test_wrong_flags_are_refused():
    with pytest.raises(ValueError, match="GAN's small network"):
        configs("vae", "--preset", "fast")
    with pytest.raises(ValueError, match="--adam-beta1 is a"):
        configs("vae", "--adam-beta1", "0.5")
    with pytest.raises(ValueError, match="adam_beta1"):
        configs("gan", "--adam-beta1", "1.5")
    with pytest.raises(SystemExit):
        configs("ebm", "--channels", "8,x")


@pytest.mark.usefixtures("dashboard_env")
def test_each_form_offers_both_recipes_and_choosing_one_fills_every_field():
    from streamlit.testing.v1 import AppTest

    from conftest import APP
    from dashboard.model_text import MODEL_FIELDS

    for model in ("gan", "vae"):
        at = AppTest.from_file(APP, default_timeout=90)
        at.switch_page(f"app_pages/{model}.py").run()
        assert not at.exception, at.exception
        choice = at.radio(key=f"{model}-form-recipe")
        assert choice.options == [RECIPE_TITLES["seed"], RECIPE_TITLES["lecture"]] and choice.value == "seed"
        assert at.number_input(key=f"{model}-form-lr").value == pytest.approx(SEED_DEFAULTS[model]["lr"])
        at.number_input(key=f"{model}-form-epochs").set_value(3).run()  # an edit the recipe replaces
        choice.set_value("lecture").run()
        assert not at.exception, at.exception
        r = recipe(model, "lecture")
        values = {**r.model_values(), **r.train_values()}
        assert at.number_input(key=f"{model}-form-lr").value == pytest.approx(values["lr"])
        assert at.number_input(key=f"{model}-form-batch").value == values["batch_size"]
        assert at.number_input(key=f"{model}-form-epochs").value == values["epochs"]
        assert at.number_input(key=f"{model}-form-ema").value == pytest.approx(values["ema"])
        for f in MODEL_FIELDS[model]:
            widget = {"bool": at.checkbox, "choice": at.selectbox}.get(f.kind, at.number_input)(key=f"{model}-form-{f.name}")
            assert widget.value == pytest.approx(values[f.name]) if f.kind == "float" else widget.value == values[f.name], f.name
        at.radio(key=f"{model}-form-recipe").set_value("seed").run()
        assert at.number_input(key=f"{model}-form-lr").value == pytest.approx(SEED_DEFAULTS[model]["lr"])
        if model == "vae":
            assert at.selectbox(key="vae-form-decoder").value == "gaussian"  # the seed's Normal(tanh(.), 1)
