"""The Ising sampler and observables against exact results (enumeration of a 4x4 lattice, Onsager's T_c and energy,
Yang's magnetisation, detailed balance of a Metropolis half-sweep), the `ising` dataset and its cache, a short RBM
training on it, the RBM/Monte Carlo comparison, and the RBM page's Ising panel through AppTest."""

from __future__ import annotations

import math

import pytest
import torch

from genlib.ising.monte_carlo import (IsingConfig, checkerboard, flip_probability, integrated_autocorrelation_time,
                          metropolis_sweep, random_spins, sample_temperature, wolff_update)
from genlib.ising.observables import (T_C, blocking_error, correlation_function, energy_per_spin,
                                      exact_thermodynamics, magnetisation, onsager_energy, onsager_magnetisation,
                                      thermodynamics, to_spins)


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: these tensors are small, and on a busy 2-core machine a second thread only waits (13x slower
    measured under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def within(value: float, exact: float, err: float, sigmas: float = 5.0, floor: float = 1e-3) -> bool:
    return abs(value - exact) <= sigmas * err + floor


# ---- observables ----

def test_observables_of_known_configurations():
    up = torch.ones(2, 6, 6)
    stripes = torch.ones(1, 6, 6)
    stripes[:, ::2] = -1  # alternate rows: horizontal bonds aligned, vertical ones anti-aligned
    neel = (torch.arange(6).view(-1, 1) + torch.arange(6)).remainder(2).mul(2).sub(1).float().unsqueeze(0)
    assert energy_per_spin(up).tolist() == [-2.0, -2.0]
    assert energy_per_spin(neel).item() == 2.0
    assert energy_per_spin(stripes).item() == 0.0
    assert magnetisation(up).tolist() == [1.0, 1.0] and magnetisation(neel).item() == 0.0
    assert correlation_function(up).tolist() == [1.0] * 4
    assert correlation_function(neel).tolist() == [1.0, -1.0, 1.0, -1.0]
    # {0, 1} visibles in any of the shapes the code meets become the same +-1 spins
    v = (neel.squeeze(0) > 0).float()
    for x in (v.view(1, 6, 6), v.view(1, 1, 6, 6), v.view(1, 36)):
        assert torch.equal(to_spins(x), neel)
    with pytest.raises(ValueError, match="square"):
        to_spins(torch.zeros(1, 35))


def test_exact_enumeration_against_a_plain_loop_and_its_limits():
    import itertools

    T, L = 2.0, 3
    weights = energies = mags = 0.0
    for state in itertools.product((-1, 1), repeat=L * L):  # 512 states, bonds counted one by one
        s = [state[i * L:(i + 1) * L] for i in range(L)]
        E = -sum(s[i][j] * (s[i][(j + 1) % L] + s[(i + 1) % L][j]) for i in range(L) for j in range(L))
        w = math.exp(-E / T)
        weights, energies, mags = weights + w, energies + w * E / (L * L), mags + w * abs(sum(state)) / (L * L)
    exact = exact_thermodynamics(L, T)
    assert exact["energy"] == pytest.approx(energies / weights, rel=1e-12)
    assert exact["abs_m"] == pytest.approx(mags / weights, rel=1e-12)
    hot, cold = exact_thermodynamics(4, 100.0), exact_thermodynamics(4, 0.2)
    assert hot["energy"] == pytest.approx(-2 / 100, abs=2e-3)  # high T: <e> -> -2 beta (two bonds per spin)
    assert cold["energy"] == pytest.approx(-2.0, abs=1e-6) and cold["abs_m"] == pytest.approx(1.0, abs=1e-6)


def test_onsager_exact_values():
    assert T_C == pytest.approx(2.0 / math.log(1.0 + math.sqrt(2.0)))
    assert T_C == pytest.approx(2.269185314, abs=1e-9)
    assert onsager_energy(T_C) == pytest.approx(-math.sqrt(2.0), abs=1e-6)  # the known critical energy
    assert onsager_energy(0.3) == pytest.approx(-2.0, abs=1e-6)
    assert onsager_energy(50.0) == pytest.approx(-0.04, abs=1e-3)
    assert onsager_magnetisation(T_C + 0.01) == 0.0 and onsager_magnetisation(T_C - 1e-6) < 0.2
    assert onsager_magnetisation(1.0) == pytest.approx(0.99927, abs=1e-4)


def test_blocking_error_of_independent_samples_is_the_standard_error():
    x = torch.randn(8192, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert blocking_error(x) == pytest.approx(1 / math.sqrt(8192), rel=0.25)
    # strongly correlated copies (each value 8 times) have a larger error, which blocking finds
    assert blocking_error(x[:1024].repeat_interleave(8)) > 2 * blocking_error(x)


def test_integrated_autocorrelation_time_of_an_ar1_process():
    g, rho, chains, steps = torch.Generator().manual_seed(1), 0.8, 100, 4000
    x = torch.zeros(steps, chains, dtype=torch.float64)
    noise = torch.randn(steps, chains, generator=g, dtype=torch.float64) * math.sqrt(1 - rho**2)
    x[0] = torch.randn(chains, generator=g, dtype=torch.float64)
    for t in range(1, steps):
        x[t] = rho * x[t - 1] + noise[t]
    assert integrated_autocorrelation_time(x) == pytest.approx((1 + rho) / (2 * (1 - rho)), rel=0.1)  # 4.5
    assert integrated_autocorrelation_time(torch.randn(500, 10, generator=g)) == pytest.approx(0.5, abs=0.15)


# ---- the sampler ----

def test_metropolis_half_sweep_satisfies_detailed_balance():
    """P(s -> s') exp(-E(s)/T) = P(s' -> s) exp(-E(s')/T) for one sublattice update, s' = s with a random subset of
    that sublattice flipped, computed exactly from the acceptance probabilities the sampler uses."""
    g = torch.Generator().manual_seed(2)
    L, T = 4, 2.0
    beta = torch.full((64, 1, 1), 1 / T, dtype=torch.float64)
    s = random_spins(64, L, generator=g).double()
    mask = checkerboard(L)[0]
    # a random subset of the sublattice, always including the sites whose flip is certain (dE <= 0), so that
    # P(s -> s') is non-zero and the identity is tested for every state
    certain = flip_probability(s, beta) == 1
    flips = ((torch.rand(64, L, L, generator=g) < 0.5) | certain) & mask
    s2 = torch.where(flips, -s, s)

    def transition(a: torch.Tensor, flipped: torch.Tensor) -> torch.Tensor:  # (64,) probability of exactly `flipped`
        p = flip_probability(a, beta)
        per_site = torch.where(flipped, p, 1 - p)
        return torch.where(mask, per_site, torch.ones_like(per_site)).flatten(1).prod(1)

    n = L * L
    lhs = transition(s, flips) * torch.exp(-n * energy_per_spin(s).double() / T)
    rhs = transition(s2, flips) * torch.exp(-n * energy_per_spin(s2).double() / T)
    assert torch.allclose(lhs, rhs, rtol=1e-10, atol=0)
    assert bool((lhs > 0).all()) and not torch.allclose(lhs, lhs[0].expand_as(lhs))  # not vacuous


@pytest.mark.parametrize("T,algorithm", [(1.5, "auto"), (T_C, "auto"), (3.5, "metropolis"), (2.0, "wolff")])
def test_sampler_matches_exact_enumeration_of_a_4x4_lattice(T, algorithm):
    cfg = IsingConfig(L=4, temperatures=(T,), n=6000, chains=1500, algorithm=algorithm, min_equilibration=50,
                      pilot=50, seed=3)
    spins, report = sample_temperature(cfg, T)
    assert spins.shape == (6000, 4, 4) and spins.dtype == torch.int8
    assert report.decorrelation >= 1 and report.equilibration >= 100
    exact = exact_thermodynamics(4, T)
    th = thermodynamics(spins.float(), T)
    assert within(th.energy, exact["energy"], th.energy_err), (th, exact)
    assert within(th.abs_m, exact["abs_m"], th.abs_m_err), (th, exact)
    assert within(th.heat, exact["heat"], th.heat_err, floor=0.02), (th, exact)
    assert within(th.chi, exact["chi"], th.chi_err, floor=0.02), (th, exact)


def test_large_lattice_matches_onsager_and_yang():
    """L=32 far from T_c, where finite-size corrections are exponentially small: the infinite-lattice results hold."""
    for T in (2.0, 3.0):
        cfg = IsingConfig(L=32, temperatures=(T,), n=400, chains=200, algorithm="metropolis", min_equilibration=100,
                          pilot=50, seed=4)
        spins, _ = sample_temperature(cfg, T)
        th = thermodynamics(spins.float(), T)
        assert within(th.energy, onsager_energy(T), th.energy_err, floor=2e-3), (T, th.energy, onsager_energy(T))
        if T < T_C:
            assert within(th.abs_m, onsager_magnetisation(T), th.abs_m_err, floor=2e-3), (th.abs_m,)
        else:
            assert th.abs_m < 0.1


def test_wolff_cluster_limits():
    g = torch.Generator().manual_seed(5)
    up = torch.ones(3, 8, 8)
    flipped, size = wolff_update(up, torch.full((3, 1, 1), 50.0), g)  # p_add = 1: the whole aligned lattice
    assert size.tolist() == [64] * 3 and torch.equal(flipped, -up)
    s = random_spins(3, 8, generator=g)
    flipped, size = wolff_update(s, torch.full((3, 1, 1), 1e-9), g)  # p_add ~ 0: the seed site alone
    assert size.tolist() == [1] * 3 and int((flipped != s).sum()) == 3
    _, size = wolff_update(up, torch.full((3, 1, 1), 50.0), g, active=torch.tensor([True, False, True]))
    assert size.tolist() == [64, 0, 64]


def test_metropolis_orders_a_cold_lattice_and_config_errors():
    g = torch.Generator().manual_seed(6)
    s, masks = random_spins(32, 8, generator=g), checkerboard(8)
    beta = torch.full((32, 1, 1), 1 / 1.0)
    for _ in range(300):
        s = metropolis_sweep(s, beta, masks, g)
    assert magnetisation(s).abs().median() > 0.9  # T = 1: ordered (a few chains may still hold a stripe)
    with pytest.raises(ValueError, match="even"):
        IsingConfig(L=9)
    with pytest.raises(ValueError, match="algorithm"):
        IsingConfig(algorithm="heatbath")


# ---- the dataset ----

def test_ising_dataset_is_generated_once_then_read_from_the_cache(tmp_path, monkeypatch):
    from genlib.ising import dataset
    from genlib.data import dataset_available, load_dataset

    name = "ising:L=8,T=2.5/3.0,n=200,seed=1"
    data = load_dataset(name, root=tmp_path)
    assert data.x_train.shape == (400, 1, 8, 8) and data.x_train.dtype == torch.uint8
    assert set(data.x_train.unique().tolist()) == {0, 255}
    assert data.x_test.shape == (40, 1, 8, 8) and data.y_train.unique().tolist() == [0, 1]
    assert data.classes == ("T=2.5", "T=3") and "tau_int" in data.source
    assert dataset.is_cached(tmp_path, name) and dataset_available(name)
    assert [r["T"] for r in dataset.sampling_reports(tmp_path, name)] == [2.5, 3.0]

    def refuse(*a, **k):
        raise AssertionError("sampled again instead of reading the cache")

    monkeypatch.setattr(dataset, "sample_temperature", refuse)
    again = load_dataset("ising:T=2.5,n=200,seed=1,L=8", root=tmp_path)  # any order of options, same cache
    assert torch.equal(again.x_train, data.x_train[:200])
    assert dataset.parse("T=2.5,n=200,seed=1,L=8").name == "ising:L=8,T=2.5,n=200,seed=1"
    assert dataset.parse("").name.startswith("ising:L=8,T=2.2692,")
    with pytest.raises(ValueError, match="even"):
        load_dataset("ising:L=7", root=tmp_path)
    with pytest.raises(ValueError, match="cannot read option"):
        load_dataset("ising:beta=1", root=tmp_path)
    with pytest.raises(ValueError, match="takes no options"):
        load_dataset("digits:L=8", root=tmp_path)


def test_form_dataset_choices_leave_out_parametric_datasets():
    from genlib.data import DATASETS

    assert DATASETS["ising"].parametric and DATASETS["ising"].offline
    assert not any(spec.parametric for name, spec in DATASETS.items() if name != "ising")


# ---- the RBM on Ising data ----

def _train_rbm(data, steps: int, k: int = 5):
    from genlib.models import build_model
    from genlib.training import TrainConfig, train

    torch.manual_seed(0)
    model = build_model("rbm", {"image_shape": (1, 8, 8), "n_hidden": 64, "k": k, "momentum": 0.5,
                                "binarize": "threshold"})
    model.configure_training(lr=0.05)
    cfg = TrainConfig(dataset=data.name, epochs=100, max_steps=steps, batch_size=50, log_every=10)
    train(model, data, cfg)
    return model.eval()


def test_short_rbm_training_learns_the_ordered_phase(tmp_path):
    """64 visibles for L = 8; after 300 CD-5 steps on T = 1.2 data the RBM's samples are magnetised like the data."""
    from genlib.data import load_dataset
    from genlib.ising.compare import compare, rbm_spins

    data = load_dataset("ising:L=8,T=1.2,n=1000", root=tmp_path)
    model = _train_rbm(data, 300)
    assert model.n_visible == 64
    spins = rbm_spins(model, 500, steps=200)
    assert spins.shape == (500, 8, 8) and magnetisation(spins).abs().mean() > 0.85
    c = compare(model, to_spins(data.x_train), 1.2, n=500, steps=200)
    assert c.mc.abs_m > 0.95 and c.rbm.abs_m > 0.85 and math.isfinite(c.z("energy"))


def test_sweep_plan_makes_valid_runs_one_per_temperature():
    from genlib.ising.compare import SweepPlan, sweep_of
    from genlib.models import make_config
    from genlib.training import TrainConfig

    plan = SweepPlan(sweep_id="s1", L=8, temperatures=(1.5, 2.5), n=1000, epochs=3)
    jobs = plan.jobs()
    assert [j["sweep"]["T"] for j in jobs] == [1.5, 2.5]
    for j in jobs:
        config = make_config("rbm", j["model_config"])
        assert config.image_shape == (1, 8, 8) and config.centering and config.n_hidden == 256
        TrainConfig(**j["train_config"])
        assert sweep_of({"model": "rbm", "dataset": j["train_config"]["dataset"], "sweep": j["sweep"]})[0] == "s1"
    assert sweep_of({"model": "rbm", "dataset": "ising:L=8,T=2", "id": "r1"}) == ("r1", 2.0)
    assert sweep_of({"model": "rbm", "dataset": "ising:L=8,T=2/3", "id": "r1"}) is None
    assert sweep_of({"model": "rbm", "dataset": "digits", "id": "r1"}) is None
    plain = SweepPlan(sweep_id="s2", L=8, temperatures=(2.0,), centering=False).jobs()[0]["model_config"]
    assert make_config("rbm", plain).centering is False


# ---- the page ----

def test_rbm_page_shows_an_ising_sweep_with_curves_table_and_lattices(dashboard_env):
    """Two finished runs of a sweep (untrained weights: the page's work is the comparison, not the training)."""
    from streamlit.testing.v1 import AppTest

    from conftest import APP
    from genlib.runs.checkpoints import save_checkpoint
    from genlib.data import load_dataset
    from genlib.ising.compare import SweepPlan
    from genlib.models import build_model
    from genlib.runs.store import RunStore, default_runs_dir

    store = RunStore(default_runs_dir())
    for job in SweepPlan(sweep_id="sweep-test", L=8, temperatures=(1.5, 3.0), n=1000, epochs=1).jobs():
        load_dataset(job["train_config"]["dataset"])  # the data a worker would have simulated
        run = store.create({"model": "rbm", "model_config": job["model_config"], "train_config": job["train_config"],
                            "dataset": job["train_config"]["dataset"], "title": job["title"], "sweep": job["sweep"]})
        save_checkpoint(run.checkpoint_path, build_model("rbm", job["model_config"]),
                        train_config=job["train_config"], progress={"step": 10, "epoch": 1, "images": 1000})
        run.write_state(state="finished", step=10, epoch=1)
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page("app_pages/rbm.py").run()
    assert not at.exception, at.exception
    assert any("Ising" in s.value for s in at.subheader)
    assert at.selectbox(key="ising-sweep-select").value == "sweep-test"
    charts = [c for c in at.get("plotly_chart") if "energy per spin" in c.proto.spec]
    assert charts, "no thermodynamics chart"
    table = next(d.value for d in at.dataframe if "E/N MC" in d.value.columns)
    assert list(table["T"]) == [1.5, 3.0] and "E/N MC" in table.columns and "z E" in table.columns
    assert at.select_slider(key="ising-lattice-T-sweep-test").options == ["1.500", "3.000"]
    assert len(at.image) >= 2  # Monte Carlo and RBM lattices side by side
    # G(r) of both at the slider's temperature (3.0, the middle one): r = 0..L/2, G(0) = 1 for +-1 spins
    corr = [c for c in at.get("plotly_chart") if "spin-spin correlation G(r)" in c.proto.spec]
    assert len(corr) == 1 and "T = 3.000" in corr[0].proto.spec
    import json

    traces = json.loads(corr[0].proto.spec)["data"]
    assert [t["name"] for t in traces] == ["Monte Carlo", "RBM samples"]
    for t in traces:
        assert t["x"] == [0, 1, 2, 3, 4] and t["y"][0] == pytest.approx(1.0) and all(-1 <= y <= 1 for y in t["y"])
    assert traces[0]["y"][1] > traces[0]["y"][4] > 0  # Monte Carlo at T = 3: correlations decay with distance
    # the form's defaults are the sweep recipe that matches Monte Carlo (SweepPlan's), and the page says its cost
    recipe = SweepPlan(sweep_id="x", L=8, temperatures=(2.0,))
    for name, value in (("hidden", recipe.n_hidden), ("k", recipe.k), ("epochs", recipe.epochs), ("lr", recipe.lr),
                        ("batch", recipe.batch_size), ("n", recipe.n)):
        assert at.number_input(key=f"ising-form-{name}").value == value, name
    assert at.toggle(key="ising-form-centering").value is recipe.centering is True
    assert any("min per temperature" in c.value for c in at.caption)
