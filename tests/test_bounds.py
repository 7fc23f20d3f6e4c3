"""Bad input is refused, good input trains: property-based tests (hypothesis) over the configuration space of every
registered model (genlib.models.MODEL_NAMES, so a new model is covered the day it is registered) and of TrainConfig.

Each drawn input goes the way a job goes (config dataclasses, TrainConfig, the device, the memory budget) and then
either trains one step on a tiny batch or is refused with a ValueError that says something. Nothing else may be
raised. Values are drawn from each field's own type and default (plausible numbers, boundaries, NaN and infinities,
huge sizes) and from junk of every other type. GENLIB_HYPOTHESIS_EXAMPLES sets the examples per test (default 60).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections import Counter

import pytest
import torch
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from genlib.jobs.budget import check_fits, meta_model
from genlib.data import DATASETS
from genlib.devices import resolve_device
from genlib.models import MODEL_NAMES, build_model, make_config, model_class
from genlib.training import TrainConfig

EXAMPLES = int(os.environ.get("GENLIB_HYPOTHESIS_EXAMPLES", "60"))
TRAIN_COST_LIMIT = 4e7  # parameters x inner steps (Gibbs, Langevin) above which a valid model is only built on "meta"
TRAIN_BYTES_LIMIT = 400 * 2**20  # ...or whose estimated memory is above this (it fits, but a test must stay quick)
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TALLY: Counter = Counter()  # outcome counts, printed at the end (pytest -s)

JUNK = st.one_of(st.none(), st.booleans(), st.text(max_size=6), st.binary(max_size=4),
                 st.floats(allow_nan=True, allow_infinity=True), st.integers(-2**70, 2**70),
                 st.lists(st.integers(-3, 3), max_size=4), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                             max_size=2))


def _options(module_name: str, default: str) -> list[str]:
    """The strings a str field accepts, found as module-level tuples or dicts that contain its default."""
    found = {default}
    for value in vars(sys.modules[module_name]).values():
        if isinstance(value, (tuple, dict)) and default in value and all(isinstance(v, str) for v in value):
            found.update(value)
    return sorted(found)


def field_values(default, module_name: str):
    """Plausible values of the default's type (boundaries included), and junk."""
    if isinstance(default, bool):
        plausible = st.booleans()
    elif isinstance(default, int):
        top = max(8, 2 * default)
        plausible = st.one_of(st.integers(-3, top), st.sampled_from([default, 0, -1, 1, 2**31, 2**63]),
                              st.integers(-2**40, 2**40))
    elif isinstance(default, float):
        top = max(1.0, 2 * default)
        plausible = st.one_of(st.floats(-1.0, top), st.floats(0.0, top),
                              st.sampled_from([default, 0.0, -0.0, 1.0, 1e-12, 1e300, float("nan"), float("inf"),
                                               -float("inf")]))
    elif isinstance(default, str):
        plausible = st.one_of(st.sampled_from(_options(module_name, default)), st.text(max_size=10))
    elif isinstance(default, tuple):
        plausible = st.one_of(st.just(default),
                              st.tuples(*[st.integers(-1, 2 * x + 2) if isinstance(x, int) else st.just(x)
                                          for x in default]),
                              st.lists(st.integers(-2, 64), max_size=5).map(tuple))
    else:  # None by default (an optional number)
        plausible = st.one_of(st.none(), st.integers(-3, 100), st.floats(allow_nan=True))
    return st.one_of(plausible, plausible, JUNK)


def _defaults(cls) -> dict:
    return {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            for f in dataclasses.fields(cls)}


def config_values(cls, *, extra_key: bool = True):
    """A dict of some of `cls`'s fields (the rest keep their defaults): none, one or two changed (most inputs get far
    enough to train), or any subset of them at once, sometimes with a misspelt key."""
    fields = {name: field_values(default, cls.__module__) for name, default in _defaults(cls).items()}
    one = st.sampled_from(sorted(fields)).flatmap(lambda name: st.fixed_dictionaries({name: fields[name]}))
    optional = dict(fields)
    if extra_key:
        optional["no_such_setting"] = st.integers()
    return st.one_of(st.just({}), one, one, st.tuples(one, one).map(lambda t: {**t[0], **t[1]}),
                     st.fixed_dictionaries({}, optional=optional))


def train_values():
    """TrainConfig inputs: a quick valid base (digits, CPU, small batches) with some fields drawn as above."""
    base = st.fixed_dictionaries({"dataset": st.sampled_from(sorted(DATASETS)), "device": st.just("cpu"),
                                  "batch_size": st.integers(1, 64)})
    devices = st.sampled_from(["cpu", "auto", "CPU ", "cuda", "cuda:7", "mps", "tpu", "cpu:0"])
    return st.tuples(base, config_values(TrainConfig, extra_key=False), st.one_of(st.none(), devices)).map(
        lambda t: {**t[0], **t[1], **({"device": t[2]} if t[2] is not None else {})})


def inner_steps(cfg) -> int:
    """The loops of one training step (CD-k's k, Langevin steps): a training step costs about this many passes."""
    steps = [v for f in dataclasses.fields(cfg) if (f.name == "k" or f.name.endswith("_steps"))
             and f.name != "sample_steps" and isinstance(v := getattr(cfg, f.name), int)]
    return max([1, *steps])


def attempt(model_name: str, model_values: dict, train_values: dict) -> str:
    """What a job does with these inputs, as far as one training step; returns 'refused', 'built' or 'trained'."""
    try:
        cfg = make_config(model_name, model_values)
        tc = TrainConfig(**train_values)
        device = resolve_device(tc.device)
        est = check_fits(model_name, cfg, batch_size=tc.batch_size, precision=tc.precision, dataset=tc.dataset,
                         device=device)
    except ValueError as e:
        assert str(e).strip(), "refused without a message"
        note(f"refused: {e}")
        return "refused"
    shape = tuple(getattr(cfg, "image_shape", (1, 28, 28)))
    if est.parameters * inner_steps(cfg) > TRAIN_COST_LIMIT or est.total > TRAIN_BYTES_LIMIT:
        model = meta_model(model_name, cfg)  # valid and fits, but too slow for a unit test: check that it builds
        assert sum(p.numel() for p in model.parameters()) == est.parameters
        return "built"
    model = build_model(model_name, cfg).to(device)
    model.configure_training(lr=tc.lr, precision=tc.precision)
    x = torch.rand(min(tc.batch_size, 4), *shape, device=device)  # a tiny batch of images in [0, 1]
    metrics = model.train_step(x)
    assert "loss" in metrics and set(metrics) <= set(model.metric_names) | {"loss"}, metrics
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in metrics.values()), metrics
    return "trained"


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    print(f"\nbounds: {sum(TALLY.values())} inputs tried: " + ", ".join(f"{k} {v}" for k, v in sorted(TALLY.items())))


@pytest.mark.parametrize("model_name", MODEL_NAMES)
def test_every_model_config_trains_or_is_refused(model_name):
    cls = model_class(model_name).config_class

    @SETTINGS
    @given(model_values=config_values(cls), train=train_values())
    def check(model_values, train):
        outcome = attempt(model_name, model_values, train)
        TALLY[f"{model_name} {outcome}"] += 1

    check()


@SETTINGS
@given(values=train_values())
def test_train_config_is_valid_or_refused_and_survives_json(values):
    try:
        tc = TrainConfig(**values)
    except ValueError as e:
        assert str(e).strip()
        TALLY["TrainConfig refused"] += 1
        return
    # what is accepted is stored in run.json and checkpoints and must come back the same on resume
    again = TrainConfig(**json.loads(json.dumps(dataclasses.asdict(tc))))
    assert again == tc
    TALLY["TrainConfig accepted"] += 1


@pytest.mark.parametrize("model_name", MODEL_NAMES)
def test_defaults_train_and_the_obvious_bad_values_are_refused(model_name):
    """Not left to chance: the seed's defaults train; zero and negative sizes, rates and batches are refused."""
    cls = model_class(model_name).config_class
    assert attempt(model_name, {}, {"dataset": "digits", "device": "cpu", "batch_size": 4}) in ("trained", "built")
    for f in dataclasses.fields(cls):
        default = f.default
        if isinstance(default, int) and not isinstance(default, bool) and default >= 1:
            for bad in (0, -1, -default):
                with pytest.raises(ValueError):
                    make_config(model_name, {f.name: bad})
    for bad in ({"lr": 0}, {"lr": -1e-3}, {"lr": float("nan")}, {"batch_size": 0}, {"batch_size": -64},
                {"epochs": 0}, {"batch_size": "64"}, {"lr": "1e-3"}, {"epochs": 1.5}, {"dataset": "../etc"},
                {"device": "cuda; rm -rf /"}, {"checkpoint_every_s": 0}, {"threads": 0}):
        with pytest.raises(ValueError):
            TrainConfig(**bad)


def test_sizes_that_do_not_fit_are_refused_before_allocating():
    """A model larger than the free memory is refused from its shapes alone (built on the meta device)."""
    with pytest.raises(ValueError, match="free"):
        check_fits("vae", {"hidden": 4096}, batch_size=65_536, device="cpu", available=2**30)
    with pytest.raises(ValueError, match="parameters|pixels"):
        check_fits("rbm", {"image_shape": (1, 100_000, 100_000), "n_hidden": 10_000}, batch_size=1, device="cpu")
    est = check_fits("vae", {"hidden": 512, "latent": 8}, batch_size=128, device="cpu", available=2**30)
    n = sum(p.numel() for p in build_model("vae", {"hidden": 512, "latent": 8}).parameters())
    assert est.parameters == n and 4 * n * 4 <= est.total < 2**28
