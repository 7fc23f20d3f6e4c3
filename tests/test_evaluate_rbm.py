"""Tests of genlib.quality.ais: exact log Z against brute force, AIS against exact log Z, the pseudo-log-likelihood
against its definition, and evaluate_rbm's whole report (a run folder's evaluation: tests/test_quality.py).

AIS tolerance: the estimate's own standard error in log space, σ = std(w) / (sqrt(M) mean(w)), is what the paper's
±3σ interval reports; a correct sampler lands within 3σ of the truth except in ~0.3% of seeds (for near-Gaussian
log-mean weights, which an effective sample size of tens or more assures), so the tests ask |log Ẑ - log Z| <= 3σ + 0.02
(the 0.02 nats absorbs float32 rounding of 784-unit sums), and also that σ is small (< 0.25 nats on log Z ~ 300),
so the check cannot pass vacuously. A missing n_h log 2 in log Z_A (11 nats for 16 hiddens), a transition that leaves
the wrong distribution invariant or an off-by-one in the weights fails it by far more.
"""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

from genlib.data import load_dataset, to_unit
from genlib.quality.ais import (AISConfig, RBMEvalConfig, ais_betas, ais_log_partition, base_rate_biases,
                                 evaluate_rbm, log_likelihood, log_partition_exact, pseudo_log_likelihood,
                                 unnormalized_log_prob)
from genlib.models.rbm import RBM, RBMConfig


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread while these tests run: small ops on 2 shared cores run slower with 2 threads, not faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _all_binary(n: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product((0.0, 1.0), repeat=n)), dtype=torch.float64)  # (2^n, n)


def _tiny_rbm(n_v_shape=(1, 2, 4), n_h=4, scale=2.0, seed=0) -> RBM:
    """A float64 RBM with large random weights and biases: peaked, far from the base distribution."""
    torch.manual_seed(seed)
    rbm = RBM(RBMConfig(image_shape=n_v_shape, n_hidden=n_h, init_std=1.0)).double()
    with torch.no_grad():
        rbm.W.mul_(scale)
        rbm.v_bias.normal_()
        rbm.h_bias.normal_()
    return rbm


def _brute_force_log_z(rbm: RBM) -> float:
    """log sum over every (v, h) pair of exp(-E(v, h)), straight from the energy."""
    v, h = _all_binary(rbm.n_visible), _all_binary(rbm.latent_dim)  # (2^n_v, n_v), (2^n_h, n_h)
    neg_e = v @ rbm.v_bias.detach()[:, None] + (h @ rbm.h_bias.detach())[None, :] + v @ rbm.W.detach().t() @ h.t()
    return float(torch.logsumexp(neg_e.flatten(), 0))  # (2^n_v * 2^n_h,) terms


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def trained_rbm(digits):
    """784 x 16 after 20 epochs of CD-1 on digits (< 1 s): weights up to ~1.5, a peaked, data-like distribution."""
    torch.manual_seed(0)
    rbm = RBM(RBMConfig(n_hidden=16))
    rbm.configure_training(lr=0.1)
    for epoch in range(20):
        for xb in digits.batches(50, generator=torch.Generator().manual_seed(epoch)):
            rbm.train_step(to_unit(xb))
    return rbm


# ---- exact log Z ----

@pytest.mark.parametrize("shape,n_h", [((1, 2, 4), 4), ((1, 2, 2), 8)])  # enumerates the hiddens, then the visibles
def test_exact_log_partition_matches_brute_force(shape, n_h):
    rbm = _tiny_rbm(shape, n_h)
    assert log_partition_exact(rbm) == pytest.approx(_brute_force_log_z(rbm), abs=1e-10)
    # chunking is only a way to sum: any chunk size gives the same number
    assert log_partition_exact(rbm, chunk=3) == pytest.approx(_brute_force_log_z(rbm), abs=1e-10)


def test_exact_log_partition_refuses_huge_layers():
    with pytest.raises(ValueError, match="2\\^30"):
        log_partition_exact(RBM(RBMConfig(n_hidden=30)))


def test_log_likelihood_normalises_over_all_visibles():
    rbm = _tiny_rbm()
    v = _all_binary(8)  # every visible state
    log_p = log_likelihood(rbm, v, log_partition_exact(rbm))
    assert float(torch.logsumexp(log_p, 0)) == pytest.approx(0.0, abs=1e-10)  # probabilities sum to 1
    torch.testing.assert_close(unnormalized_log_prob(rbm, v), -rbm.free_energy(v))


# ---- AIS ----

def test_paper_schedule():
    betas = ais_betas(14_500)
    assert betas.shape == (14_501,) and betas[0] == 0 and betas[-1] == 1
    assert bool((betas.diff() > 0).all())
    # 500 steps to 0.5, 4,000 more to 0.9, 10,000 more to 1, as in the paper
    assert betas[500].item() == pytest.approx(0.5) and betas[4_500].item() == pytest.approx(0.9)
    assert betas[1:501].diff().mean().item() == pytest.approx(1e-3)
    assert betas[-100:].diff().mean().item() == pytest.approx(1e-5)
    small = ais_betas(1_000)
    assert small.shape == (1_001,) and bool((small.diff() > 0).all()) and small[-1] == 1


def _assert_within_ais_error(result, exact: float, max_std: float = 0.25) -> None:
    assert result.log_z_std < max_std, f"AIS too noisy to test: σ = {result.log_z_std:.3f}"
    err = result.log_z - exact
    assert abs(err) <= 3 * result.log_z_std + 0.02, f"{result.log_z:.4f} vs exact {exact:.4f}, σ {result.log_z_std:.4f}"
    assert result.log_z_lo - 0.02 <= exact <= result.log_z_hi + 0.02  # the paper's interval holds the truth too


def test_plain_importance_sampling_is_exact_on_a_tiny_rbm():
    """One step (β: 0 -> 1, no transition) is plain importance sampling from the base: tests the weights alone."""
    rbm = _tiny_rbm()
    result = ais_log_partition(rbm, torch.zeros(8), AISConfig(n_steps=1, n_chains=200_000, seed=1))
    _assert_within_ais_error(result, log_partition_exact(rbm), max_std=0.02)


def test_ais_matches_exact_log_z_on_a_tiny_rbm():
    rbm = _tiny_rbm()
    result = ais_log_partition(rbm, torch.zeros(8), AISConfig(n_steps=1_000, n_chains=500))
    _assert_within_ais_error(result, log_partition_exact(rbm), max_std=0.03)
    assert result.ess > 250 and result.log_weights.dtype == torch.float64


def test_ais_matches_exact_log_z_for_random_weights_784x12():
    torch.manual_seed(3)
    rbm = RBM(RBMConfig(n_hidden=12, init_std=0.1))  # |W v + c| ~ 2: far from independent units
    with torch.no_grad():
        rbm.v_bias.normal_(-1.0, 1.0)
        rbm.h_bias.normal_()
    result = ais_log_partition(rbm, rbm.v_bias.detach(), AISConfig(n_steps=1_000, n_chains=100))
    _assert_within_ais_error(result, log_partition_exact(rbm))


def test_ais_matches_exact_log_z_for_a_trained_rbm_784x16(trained_rbm, digits):
    """The evaluation's own setting: base rates from the training data, the paper's schedule shape, 100 chains."""
    base = base_rate_biases(digits.x_train)
    result = ais_log_partition(trained_rbm, base, AISConfig(n_steps=3_000, n_chains=100))
    exact = log_partition_exact(trained_rbm)
    _assert_within_ais_error(result, exact)
    # log Z_A is the base model's: independent visibles and n_h free hidden units
    assert result.log_z_base == pytest.approx(float(torch.nn.functional.softplus(base).sum()) + 16 * math.log(2))


def test_ais_is_reproducible_and_reports_progress(trained_rbm, digits):
    seen = []
    cfg = AISConfig(n_steps=200, n_chains=10, seed=5, progress_every=50)
    a = ais_log_partition(trained_rbm, base_rate_biases(digits.x_train), cfg, progress=lambda f, m: seen.append(f))
    b = ais_log_partition(trained_rbm, base_rate_biases(digits.x_train), cfg)
    assert a.log_z == b.log_z and seen == [0.25, 0.5, 0.75, 1.0]


def test_base_rates_from_uint8_and_float_agree_and_are_smoothed(digits):
    from_uint8 = base_rate_biases(digits.x_train)
    from_float = base_rate_biases(to_unit(digits.x_train))
    torch.testing.assert_close(from_uint8, from_float)
    p = torch.sigmoid(from_uint8)
    assert p.min() >= 0.05 / 1.05 - 1e-9  # the paper's pseudo-counts keep every base rate off 0


# ---- pseudo-log-likelihood ----

def test_pseudo_log_likelihood_matches_its_definition_and_is_unbiased():
    rbm = _tiny_rbm()
    v = _all_binary(8)[::7]  # (37, 8) assorted visible states
    # brute force: log p(v_i | v_-i) from the exact joint over all visibles
    log_p = log_likelihood(rbm, _all_binary(8), log_partition_exact(rbm))  # (256,)
    index = {tuple(row.tolist()): i for i, row in enumerate(_all_binary(8))}
    expected = []
    for row in v:
        total = 0.0
        for i in range(8):
            flipped = row.clone()
            flipped[i] = 1 - flipped[i]
            a, b = log_p[index[tuple(row.tolist())]], log_p[index[tuple(flipped.tolist())]]
            total += float(a - torch.logaddexp(a, b))
        expected.append(total)
    exact = pseudo_log_likelihood(rbm, v, exact=True)
    torch.testing.assert_close(exact, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-10)
    # one random bit times n_visible: unbiased, so the mean of many draws approaches the exact figure
    many = v.repeat(4_000, 1)  # (148,000, 8)
    stochastic = pseudo_log_likelihood(rbm, many, generator=torch.Generator().manual_seed(0)).reshape(4_000, -1)
    se = stochastic.std(0) / math.sqrt(4_000)
    assert bool(((stochastic.mean(0) - exact).abs() <= 4 * se + 1e-9).all())


# ---- the whole evaluation ----

def test_evaluate_rbm_reports_consistent_figures(trained_rbm, digits):
    cfg = RBMEvalConfig(ais=AISConfig(n_steps=500, n_chains=50))
    out = evaluate_rbm(trained_rbm, digits.x_train, digits.x_test, cfg)
    json.dumps(out)  # JSON-able
    assert out["n_test"] == 297 and out["units"] == "nats per image"
    assert out["test_log_likelihood_lo"] <= out["test_log_likelihood"]
    # 16 hidden units: the exact figure comes too, and AIS is near it
    assert abs(out["log_z"] - out["log_z_exact"]) < 3 * out["log_z_std"] + 0.05
    assert -784 * math.log(2) < out["test_log_likelihood_exact"] < 0
    assert out["pseudo_log_likelihood"] < 0
    # the same settings give the same figures: binarisation, chains and flipped bits all have fixed seeds
    again = evaluate_rbm(trained_rbm, digits.x_train, digits.x_test, cfg)
    timing = {"ais_seconds"}
    assert {k: v for k, v in again.items() if k not in timing} == {k: v for k, v in out.items() if k not in timing}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_ais_runs_on_cuda(trained_rbm, digits):
    rbm = RBM(trained_rbm.config)
    rbm.load_state_dict(trained_rbm.state_dict())
    rbm = rbm.cuda()
    result = ais_log_partition(rbm, base_rate_biases(digits.x_train), AISConfig(n_steps=3_000, n_chains=100))
    _assert_within_ais_error(result, log_partition_exact(rbm))
