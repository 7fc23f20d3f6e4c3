"""Tests of genlib.quality.iwae against exact figures: a VAE with a 2-D latent on 6-pixel images, where log p(x) and the
ELBO are integrals over z computed on a grid, and the IWAE bound's known behaviour in k.

Tolerances come from the estimators' own spread: a mean of R independent figures is within 4 standard errors of its
expectation except with probability ~6e-5 (near-Gaussian means of thousands of terms); the bound L_k of one image with
k samples is within 4 σ_k of log p(x), σ_k = std(w) / (sqrt(k) mean(w)) by the delta method, plus its bias
Var(w) / (2 k mean(w)^2) = σ_k^2 / 2. The grid integral is checked against a finer, wider grid (agreement to 1e-5).
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from genlib.data import load_dataset
from genlib.quality.iwae import VAEEvalConfig, evaluate_vae, log_weights, vae_bounds
from genlib.models.vae import VAE, VAEConfig

LOG_2PI = math.log(2 * math.pi)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread while these tests run: small ops on 2 shared cores run slower with 2 threads, not faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny():
    """A 6-pixel Bernoulli VAE with a 2-D latent, decoder weights scaled up so p(x|z) varies strongly with z, and
    five binary images; q(z|x) is the random encoder's, a poor fit, which makes the k-dependence visible."""
    torch.manual_seed(0)
    vae = VAE(VAEConfig(image_shape=(1, 2, 3), hidden=16, latent=2)).eval()
    with torch.no_grad():
        for p in vae.decoder.parameters():
            p.mul_(3.0)
    x = torch.bernoulli(torch.full((5, 1, 2, 3), 0.5), generator=torch.Generator().manual_seed(0))
    return vae, x


def _grid(half_width: float, n: int) -> tuple[torch.Tensor, float]:
    g = torch.linspace(-half_width, half_width, n, dtype=torch.float64)
    z = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)  # (n^2, 2) float64
    return z, 2 * half_width / (n - 1)


@torch.no_grad()
def _exact(vae: VAE, x: torch.Tensor, half_width: float = 7.0, n: int = 401) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p(x), ELBO) per image (B,) float64 by the rectangle rule on a grid over z (exponentially accurate here:
    the integrands are smooth and decay like Gaussians)."""
    z, dz = _grid(half_width, n)
    raw = vae.decode_logits(z.float())  # (G, 1, 2, 3)
    mu, log_sigma = vae.encode(x)  # (B, 2)
    log_pz = -0.5 * z.square().sum(-1) - LOG_2PI  # (G,)
    log_p, elbo = [], []
    for i in range(x.shape[0]):
        log_px_z = -vae.recon_term(raw, x[i].expand(z.shape[0], -1, -1, -1)).double()  # (G,)
        log_p.append(torch.logsumexp(log_px_z + log_pz, 0) + 2 * math.log(dz))
        eps = (z - mu[i].double()) / log_sigma[i].double().exp()
        q = torch.exp(-0.5 * eps.square().sum(-1) - LOG_2PI - log_sigma[i].double().sum())  # q(z|x) on the grid (G,)
        elbo.append((q * log_px_z).sum() * dz * dz - vae.kl_term(mu[i:i + 1], log_sigma[i:i + 1]).double()[0])
    return torch.stack(log_p), torch.stack(elbo)


def test_grid_integral_has_converged(tiny):
    vae, x = tiny
    coarse, fine = _exact(vae, x), _exact(vae, x, half_width=8.0, n=601)
    torch.testing.assert_close(coarse[0], fine[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(coarse[1], fine[1], rtol=0, atol=1e-5)


def test_k1_bound_and_elbo_both_estimate_the_exact_elbo(tiny):
    vae, x = tiny
    _, elbo_exact = _exact(vae, x)
    reps = 20_000
    elbo, l1 = vae_bounds(vae, x.repeat(reps, 1, 1, 1), 1, generator=torch.Generator().manual_seed(1))
    for estimate in (elbo.reshape(reps, -1), l1.reshape(reps, -1)):  # (R, 5): R independent draws per image
        se = estimate.std(0) / math.sqrt(reps)
        assert bool(((estimate.mean(0) - elbo_exact).abs() <= 4 * se).all()), (estimate.mean(0), elbo_exact, se)
    assert float(se.max()) < 0.05  # a tight check, not a vacuous one


def test_bound_increases_with_k_towards_log_p(tiny):
    vae, x = tiny
    log_p, elbo_exact = _exact(vae, x)
    reps = {1: 4_000, 10: 1_000, 100: 200, 1_000: 40}  # R independent bounds per image at each k
    means, ses = [], []
    for i, (k, r) in enumerate(reps.items()):
        _, lk = vae_bounds(vae, x.repeat(r, 1, 1, 1), k, generator=torch.Generator().manual_seed(10 + i))
        lk = lk.reshape(r, -1).sum(1)  # (R,) the bound summed over the five images
        means.append(float(lk.mean()))
        ses.append(float(lk.std() / math.sqrt(r)))
    # E L_1 <= E L_10 <= E L_100 <= E L_1000 <= log p(x) (Burda et al., theorem 1), each step beyond the noise
    for a, b, sa, sb in zip(means, means[1:], ses, ses[1:]):
        assert b - a > -4 * math.hypot(sa, sb), (means, ses)
    assert means[-1] - means[0] > 1.0  # the random encoder leaves a gap of nats for k to close
    assert means[-1] <= float(log_p.sum()) + 4 * ses[-1]
    assert means[0] == pytest.approx(float(elbo_exact.sum()), abs=4 * ses[0])


def test_iwae_with_large_k_reaches_the_exact_log_likelihood(tiny):
    vae, x = tiny
    log_p, _ = _exact(vae, x)
    k = 20_000
    _, lk = vae_bounds(vae, x, k, generator=torch.Generator().manual_seed(2), max_rows=25_000)  # chunked over k
    # the delta-method σ_k of each image's bound, from an independent draw of k log-weights
    mu, log_sigma = vae.encode(x)
    z = mu[:, None] + log_sigma.exp()[:, None] * torch.randn(5, k, 2, generator=torch.Generator().manual_seed(3))
    lw, _ = log_weights(vae, x, z, mu, log_sigma)  # (5, k)
    w = torch.exp(lw - lw.max(1, keepdim=True).values)
    sigma = w.std(1) / (math.sqrt(k) * w.mean(1))  # (5,)
    assert float(sigma.max()) < 0.02
    assert bool(((lk - log_p).abs() <= 4 * sigma + sigma.square() / 2 + 1e-4).all()), (lk - log_p, sigma)


def test_evaluate_vae_on_digits_states_its_protocol():
    data = load_dataset("digits")
    torch.manual_seed(0)
    vae = VAE(VAEConfig(hidden=32, latent=4))
    out = evaluate_vae(vae, data.x_test, VAEEvalConfig(k=20, n_test=100))
    json.dumps(out)
    assert out["n_test"] == 100 and out["iwae_k"] == 20 and out["comparable"] is True
    assert "stochastic binarisation" in out["data"] and "seed 0" in out["data"]
    assert out["iwae_nll"] <= out["neg_elbo"] + 3 * out["neg_elbo_se"]  # the tighter bound, up to noise
    assert 0 < out["iwae_nll"] < 784 * math.log(2) * 2  # an untrained model, finite and positive
    assert vae.training  # the model's mode is given back
    again = evaluate_vae(vae, data.x_test, VAEEvalConfig(k=20, n_test=100))
    assert again["iwae_nll"] == out["iwae_nll"]  # fixed binarisation and draws

    gaussian = VAE(VAEConfig(hidden=32, latent=4, decoder="gaussian"))
    out = evaluate_vae(gaussian, data.x_test, VAEEvalConfig(k=5, n_test=50))
    assert out["comparable"] is False and "not comparable" in out["units"] and "density" in out["data"]
