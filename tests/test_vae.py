"""Tests of genlib.models.vae against references: torch.distributions, the seed's formulation, brute force."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from genlib.data import load_dataset, to_unit
from genlib.models.vae import VAE, VAEConfig


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", download=False)


def test_analytic_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(1)
    mu, log_sigma = torch.randn(16, 8, generator=g) * 2, torch.randn(16, 8, generator=g)
    expected = kl_divergence(Normal(mu, log_sigma.exp()), Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(VAE.kl_term(mu, log_sigma), expected)


def test_gaussian_loss_equals_seed_formulation_at_fixed_z():
    torch.manual_seed(0)
    vae = VAE(VAEConfig(decoder="gaussian"))
    x = _images(32)
    z = torch.randn(32, 8)
    got = vae.loss(x, z=z)
    # the seed: encoder and decoder see data Normalize(0.5, 1)-shifted; -(log p(x|z) - KL), batch means
    xs = x.view(32, -1) - 0.5
    h = vae.encoder(xs)
    q_z = Normal(vae.enc_mu(h), vae.enc_log_sigma(h).exp())
    p_x = Normal(torch.tanh(vae.decoder(z)), 1.0)
    log_likelihood = p_x.log_prob(xs).sum(-1).mean()
    kl = kl_divergence(q_z, Normal(0.0, 1.0)).sum(-1).mean()
    torch.testing.assert_close(got["recon"], -log_likelihood)
    torch.testing.assert_close(got["kl"], kl)
    torch.testing.assert_close(got["loss"], -(log_likelihood - kl))


def test_bernoulli_recon_equals_brute_force():
    torch.manual_seed(0)
    vae = VAE(VAEConfig(latent=4, hidden=64))
    x = _images(8)
    z = torch.randn(8, 4)
    p = torch.sigmoid(vae.decode_logits(z).double()).view(8, -1)
    xd = x.double().view(8, -1)
    brute = -(xd * p.log() + (1 - xd) * (1 - p).log()).sum(-1)
    torch.testing.assert_close(vae.recon_term(vae.decode_logits(z), x).double(), brute, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(vae.loss(x, z=z)["recon"].double(), brute.mean(), rtol=1e-5, atol=1e-3)


def test_beta_weights_the_kl_term():
    torch.manual_seed(0)
    vae = VAE(VAEConfig(hidden=32, beta=0.5))
    x, z = _images(4), torch.randn(4, 8)
    terms = vae.loss(x, z=z)
    torch.testing.assert_close(terms["loss"], terms["recon"] + 0.5 * terms["kl"])
    vae.set_beta(4.0)
    assert vae.beta == 4.0 and vae.config.beta == 0.5
    terms = vae.loss(x, z=z)
    torch.testing.assert_close(terms["loss"], terms["recon"] + 4.0 * terms["kl"])
    with pytest.raises(ValueError, match="beta"):
        vae.set_beta(11.0)


def test_shapes_and_ranges():
    torch.manual_seed(0)
    for decoder in ("bernoulli", "gaussian"):
        vae = VAE(VAEConfig(decoder=decoder, latent=3, hidden=32))
        mu, log_sigma = vae.encode(_images(5))
        assert mu.shape == log_sigma.shape == (5, 3)
        z = vae.reparameterize(mu, log_sigma, generator=torch.Generator().manual_seed(0))
        assert z.shape == (5, 3)
        raw, mu2, _ = vae(_images(5))
        assert raw.shape == (5, 1, 28, 28) and mu2.shape == (5, 3)
        images = vae.decode(z)
        assert images.shape == (5, 1, 28, 28) and not images.requires_grad
        assert images.min() >= 0 and images.max() <= 1
        assert vae.sample_latent(7).shape == (7, 3) and vae.latent_dim == 3


def test_reparameterize_is_mu_plus_sigma_eps():
    mu, log_sigma = torch.randn(6, 8), torch.randn(6, 8)
    z = VAE(VAEConfig(hidden=16)).reparameterize(mu, log_sigma, generator=torch.Generator().manual_seed(3))
    eps = torch.randn(6, 8, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(z, mu + log_sigma.exp() * eps)


def test_sample_is_reproducible_with_a_generator():
    vae = VAE(VAEConfig(hidden=32))
    a = vae.sample(4, generator=torch.Generator().manual_seed(7))
    b = vae.sample(4, generator=torch.Generator().manual_seed(7))
    assert a.shape == (4, 1, 28, 28)
    torch.testing.assert_close(a, b)


def test_every_metric_has_a_label_and_an_explanation():
    assert VAE.metric_names[0] == "loss" and set(VAE.metric_labels) == set(VAE.metric_names)
    for text in VAE.metric_labels.values():
        label, explanation = text.split(": ", 1)  # "<label>: <one sentence>"
        assert label and explanation.endswith(".") and explanation.count(". ") == 0


@pytest.mark.parametrize("bad, field", [({"latent": 1}, "latent"), ({"latent": 65}, "latent"),
                                        ({"hidden": 0}, "hidden"), ({"decoder": "x"}, "decoder"),
                                        ({"beta": -1.0}, "beta"), ({"image_shape": (28, 28)}, "image_shape")])
def test_config_refuses_bad_values(bad, field):
    with pytest.raises(ValueError, match=field):
        VAEConfig(**bad)


def test_train_step_needs_configure_training():
    with pytest.raises(RuntimeError, match="configure_training"):
        VAE(VAEConfig(hidden=16)).train_step(_images(2))


def _train(vae: VAE, digits, steps: int, precision: str = "fp32") -> list[dict[str, torch.Tensor]]:
    vae.configure_training(lr=1e-3, precision=precision)
    g = torch.Generator().manual_seed(0)
    history = []
    while len(history) < steps:
        for xb in digits.batches(128, generator=g):
            history.append(vae.train_step(to_unit(xb)))
            if len(history) == steps:
                break
    return history


def test_training_on_digits_lowers_the_loss(digits):
    torch.manual_seed(0)
    history = _train(VAE(VAEConfig()), digits, 150)
    first, last = history[0], history[-1]
    assert set(first) == {"loss", "recon", "kl"}
    assert all(v.dim() == 0 and not v.requires_grad for v in first.values())
    start = torch.stack([h["loss"] for h in history[:5]]).mean().item()
    end = torch.stack([h["loss"] for h in history[-10:]]).mean().item()
    assert start > 400 and end < 0.6 * start  # ~548 nats at the start (784 log 2 = 543), ~180 after 150 steps
    assert last["kl"].item() > 1.0  # the code carries information: no posterior collapse


def test_bf16_training_stays_finite(digits):
    torch.manual_seed(0)
    for decoder in ("bernoulli", "gaussian"):
        history = _train(VAE(VAEConfig(decoder=decoder, hidden=128)), digits, 15, precision="bf16")
        for h in history:
            assert all(math.isfinite(v.item()) and v.dtype == torch.float32 for v in h.values())
        assert history[-1]["loss"] < history[0]["loss"]


@pytest.mark.parametrize("decoder", ["bernoulli", "gaussian"])
def test_batch_summed_loss_equals_the_mean_of_per_image_terms(decoder):
    torch.manual_seed(0)
    vae = VAE(VAEConfig(decoder=decoder, hidden=64, beta=0.7))
    x, z = _images(16), torch.randn(16, 8)
    terms = vae.loss(x, z=z)
    mu, log_sigma = vae.encode(x)
    torch.testing.assert_close(terms["recon"], vae.recon_term(vae.decode_logits(z), x).mean())
    torch.testing.assert_close(terms["kl"], vae.kl_term(mu, log_sigma).mean())
    torch.testing.assert_close(terms["loss"], terms["recon"] + 0.7 * terms["kl"])


@pytest.mark.parametrize("decoder", ["bernoulli", "gaussian"])
def test_train_step_reports_the_negative_elbo_written_out(decoder):
    """train_step's metrics (the loss it descends, one draw z = mu + sigma eps per image) are the negative ELBO
    written out here from the lecture's formulas in float64, with the same eps: the loss is recon_term + beta kl_term
    and no other derivation of them."""
    torch.manual_seed(0)
    vae = VAE(VAEConfig(decoder=decoder, hidden=64, latent=4, beta=0.3))
    ref = copy.deepcopy(vae).double()  # the parameters before the step
    vae.configure_training(lr=1e-3)
    x = _images(16, seed=5)
    torch.manual_seed(11)
    got = vae.train_step(x)
    torch.manual_seed(11)
    eps = torch.randn(16, 4)  # the draw train_step's reparameterisation took from the global stream
    shift = 0.5 if decoder == "gaussian" else 0.0
    xd = x.double().reshape(16, -1)
    h = ref.encoder(xd - shift)
    mu, log_sigma = ref.enc_mu(h), ref.enc_log_sigma(h)
    raw = ref.decoder(mu + log_sigma.exp() * eps.double())  # (16, 784)
    if decoder == "bernoulli":  # -sum_i [x_i log p_i + (1 - x_i) log(1 - p_i)], p = sigmoid(raw)
        p = torch.sigmoid(raw)
        recon = -(xd * p.log() + (1 - xd) * (1 - p).log()).sum(-1)
    else:  # -log N(x - 0.5; tanh(raw), 1) summed over pixels
        recon = (0.5 * (xd - 0.5 - torch.tanh(raw)) ** 2 + 0.5 * math.log(2 * math.pi)).sum(-1)
    kl = 0.5 * (mu ** 2 + (2 * log_sigma).exp() - 1 - 2 * log_sigma).sum(-1)  # K&W appendix B
    torch.testing.assert_close(got["recon"].double(), recon.mean(), rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(got["kl"].double(), kl.mean(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got["loss"].double(), (recon + 0.3 * kl).mean(), rtol=1e-5, atol=1e-3)


def _adam_states_equal(a: torch.optim.Optimizer, b: torch.optim.Optimizer) -> None:
    sa, sb = a.state_dict()["state"], b.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        for key in sa[i]:
            torch.testing.assert_close(torch.as_tensor(sa[i][key]).float(), torch.as_tensor(sb[i][key]).float())


def test_adam_is_fused_and_stays_fused_after_loading_an_unfused_state():
    torch.manual_seed(0)
    vae = VAE(VAEConfig(hidden=32, latent=4))
    vae.configure_training(lr=1e-3)
    assert all(g["fused"] for g in vae.optimizer.param_groups)
    # a checkpoint written by an unfused Adam (an older genlib): its param groups say fused=None
    old = VAE(VAEConfig(hidden=32, latent=4))
    old.load_state_dict(vae.state_dict())
    old.optimizer = torch.optim.Adam(old.parameters(), lr=1e-3)
    for step in range(2):
        torch.manual_seed(step)
        old.train_step(_images(8, seed=step))
    state = copy.deepcopy(old.training_state())  # as a checkpoint would: tensors not shared with `old`
    again = VAE(VAEConfig(hidden=32, latent=4))
    again.load_state_dict(old.state_dict())
    again.configure_training(lr=1e-3)
    again.load_training_state(state)
    assert all(g["fused"] for g in again.optimizer.param_groups)
    steps = [again.optimizer.state[p]["step"] for p in again.parameters()]
    assert all(s.dtype == torch.float32 and s.device == p.device for s, p in zip(steps, again.parameters()))
    # the resumed fused step continues the unfused run's moments: same update within rounding
    for model in (old, again):
        torch.manual_seed(7)
        model.train_step(_images(8, seed=9))
    for p, q in zip(old.parameters(), again.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)
    _adam_states_equal(old.optimizer, again.optimizer)
