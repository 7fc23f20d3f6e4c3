"""genlib.config, the one validation idiom: its checks, and every config dataclass in genlib using it the same way
(a bool is refused where a number belongs and a number where a bool belongs, junk types give ValueError, never
TypeError)."""

from __future__ import annotations

import dataclasses
import math

import pytest

from genlib.config import check_bool, check_choice, check_int, check_ints, check_number, is_int, is_number


def test_ints_refuse_bools_floats_and_out_of_range():
    check_int("n", 3, 1, 5)
    check_int("n", 10**12, 1)  # no upper bound
    for bad in (True, False, 3.0, "3", None, 0, 6, [3]):
        with pytest.raises(ValueError, match=r"^n must be an int"):
            check_int("n", bad, 1, 5)
    assert is_int(0) and not is_int(True) and not is_int(1.0)


def test_numbers_refuse_bools_nan_infinities_and_respect_open_ends():
    check_number("x", 0, 0.0, 1.0)
    check_number("x", 1.0, 0.0, 1.0)
    for bad in (True, False, float("nan"), math.inf, -math.inf, "0.5", None, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"^x must be a number in \[0, 1\]"):
            check_number("x", bad, 0.0, 1.0)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        check_number("x", 0.0, 0.0, 1.0, lo_open=True, hi_open=True)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        check_number("x", 1.0, 0.0, 1.0, hi_open=True)
    assert is_number(2) and not is_number(True) and not is_number(float("nan"))


def test_bools_refuse_numbers_and_strings():
    check_bool("flag", False)
    for bad in (0, 1, "true", None):
        with pytest.raises(ValueError, match="^flag must be true or false"):
            check_bool("flag", bad)


def test_choices_refuse_unhashable_junk_with_a_value_error():
    check_choice("mode", "a", ("a", "b"))
    for bad in (["a"], {"a": 1}, "c", None, True):
        with pytest.raises(ValueError, match="^mode must be one of a, b"):
            check_choice("mode", bad, ("a", "b"))


def test_int_tuples():
    check_ints("shape", (1, 28, 28), 3, 1)
    for bad in ([1, 28, 28], (1, 28), (1, True, 28), (0, 28, 28), (1, 28.0, 28)):
        with pytest.raises(ValueError, match="^shape must be 3 ints"):
            check_ints("shape", bad, 3, 1)


# ---- every config of genlib, swept field by field ----

def _configs():
    from genlib.digit_input import DigitPrep
    from genlib.ising.dataset import IsingDataOptions
    from genlib.ising.monte_carlo import IsingConfig
    from genlib.models import MODEL_NAMES, model_class
    from genlib.quality.ais import AISConfig, RBMEvalConfig
    from genlib.quality.classifier import ClassifierConfig, ClassifierTrainConfig
    from genlib.quality.iwae import VAEEvalConfig
    from genlib.quality.settings import CHEAP
    from genlib.training import TrainConfig

    out = {name: model_class(name).config_class() for name in MODEL_NAMES}
    out.update({"TrainConfig": TrainConfig(), "QualitySettings": CHEAP, "AISConfig": AISConfig(),
                "RBMEvalConfig": RBMEvalConfig(), "VAEEvalConfig": VAEEvalConfig(),
                "ClassifierConfig": ClassifierConfig(), "ClassifierTrainConfig": ClassifierTrainConfig(),
                "IsingConfig": IsingConfig(), "IsingDataOptions": IsingDataOptions(), "DigitPrep": DigitPrep()})
    return out


CONFIGS = _configs()


def _cases():
    for label, config in CONFIGS.items():
        for f in dataclasses.fields(config):
            value = getattr(config, f.name)
            if isinstance(value, bool):
                yield pytest.param(label, f.name, (0, 1, "true"), id=f"{label}.{f.name}")
            elif isinstance(value, (int, float)):
                yield pytest.param(label, f.name, (True, False, "1", float("nan"), [1]), id=f"{label}.{f.name}")
            elif isinstance(value, str):
                yield pytest.param(label, f.name, (["x"], {"x": 1}, 1, True), id=f"{label}.{f.name}")


@pytest.mark.parametrize("label, field, bads", list(_cases()))
def test_every_config_refuses_the_wrong_type_with_a_value_error(label, field, bads):
    config = CONFIGS[label]
    for bad in bads:
        with pytest.raises(ValueError) as e:
            dataclasses.replace(config, **{field: bad})
        assert field.split("_")[0] in str(e.value) or "need" in str(e.value), (field, bad, str(e.value))


def test_the_sweep_covers_every_kind_of_field():
    kinds = {type(getattr(c, f.name)).__name__ for c in CONFIGS.values() for f in dataclasses.fields(c)}
    assert {"bool", "int", "float", "str"} <= kinds
    assert len(list(_cases())) > 80


# ---- one source of bounds: the model configs' declarations, read by the config check and by the dashboard's form ----

def test_every_model_config_field_declares_its_bounds():
    from genlib.config import bounds
    from genlib.models import MODEL_NAMES, model_class

    for name in MODEL_NAMES:
        cls = model_class(name).config_class
        undeclared = [f.name for f in dataclasses.fields(cls) if bounds(cls, f.name) is None]
        # tuples (image_shape, the EBM's channels) are checked by check_ints in __post_init__
        assert all(isinstance(getattr(cls(), n), tuple) for n in undeclared), (name, undeclared)


def test_the_form_offers_exactly_what_the_config_accepts():
    """Each form field's widget range is the config's declared range (an open end one step in): its ends are
    accepted by the config, one step beyond them is refused."""
    from dashboard.model_text import MODEL_FIELDS
    from genlib.models import make_config

    for model, form in MODEL_FIELDS.items():
        for f in form:
            if f.kind == "choice":
                for option in f.options:
                    make_config(model, {f.name: option})
                assert set(f.options) == set(f.bounds.options)
                continue
            if f.kind == "bool":
                make_config(model, {f.name: True})
                continue
            cast = int if f.kind == "int" else float
            make_config(model, {f.name: cast(f.lo)})  # both ends of the widget are valid settings
            make_config(model, {f.name: cast(f.hi)})
            step = 1 if f.kind == "int" else f.step
            if f.kind == "int" or not f.bounds.lo_open:
                with pytest.raises(ValueError, match=f.name):
                    make_config(model, {f.name: cast(f.lo - step)})
            with pytest.raises(ValueError, match=f.name):
                make_config(model, {f.name: cast(f.hi + (step if not f.bounds.hi_open else step * 1.0001))})


def test_a_live_knob_is_checked_against_the_same_declaration():
    from genlib.config import bounds
    from genlib.models import model_class
    from genlib.models.rbm import RBMConfig
    from genlib.models.vae import VAEConfig

    hi = bounds(VAEConfig, "beta").hi
    model_class("vae").check_knob("beta", hi)
    with pytest.raises(ValueError, match="beta"):
        model_class("vae").check_knob("beta", hi + 0.5)
    top = bounds(RBMConfig, "k").hi
    model_class("rbm").check_knob("k", int(top))
    with pytest.raises(ValueError, match="k must be an int"):
        model_class("rbm").check_knob("k", int(top) + 1)


@pytest.mark.parametrize("model_name", ["ebm", "gan"])
def test_a_whole_number_for_a_real_field_is_stored_as_a_float_and_trains(model_name):
    """Hypothesis found it (tests/test_bounds.py): adam_beta1=0 passed the bounds, and torch's Adam then refused
    betas (0, 0.999) for mixing int and float."""
    from genlib.models import build_model, make_config

    config = make_config(model_name, {"adam_beta1": 0})
    assert config.adam_beta1 == 0.0 and type(config.adam_beta1) is float
    model = build_model(model_name, {"adam_beta1": 0})
    model.configure_training(lr=1e-3, precision="fp32")  # raised ValueError before
