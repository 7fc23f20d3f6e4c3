"""Tests of genlib.models.gan against the seed's Keras model (shapes, parameter counts) and a two-pass reference."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from genlib.data import load_dataset, to_unit
from genlib.models.gan import GAN, GANConfig


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", download=False)


def test_layer_shapes_equal_the_seeds_asserts():
    gan = GAN(GANConfig())
    shapes = {}

    def record(key, t):  # hooks must return None, or they replace the layer's input or output
        shapes[key] = tuple(t.shape[1:])

    hooks = [gan.netG.deconv1.register_forward_pre_hook(lambda m, a: record("reshape", a[0])),
             gan.netG.bn1.register_forward_hook(lambda m, a, o: record("deconv1", o)),
             gan.netG.bn2.register_forward_hook(lambda m, a, o: record("deconv2", o))]
    x = gan.netG(torch.randn(2, 100))
    for h in hooks:
        h.remove()
    # the seed's asserts (None, 7, 7, 256), (None, 7, 7, 128), (None, 14, 14, 64), (None, 28, 28, 1), channels first
    assert shapes == {"reshape": (256, 7, 7), "deconv1": (128, 7, 7), "deconv2": (64, 14, 14)}
    assert x.shape == (2, 1, 28, 28) and x.abs().max() <= 1
    assert gan.netD(x).shape == (2, 1)  # one logit per image


def test_parameter_counts_equal_keras():
    gan = GAN(GANConfig())
    trainable_g = sum(p.numel() for p in gan.netG.parameters())
    # Keras counts BN's moving mean and variance as (non-trainable) weights; PyTorch keeps them as buffers
    moving = sum(b.numel() for n, b in gan.netG.named_buffers() if n.endswith(("running_mean", "running_var")))
    assert trainable_g == 2_305_472
    assert trainable_g + moving == 2_330_944
    assert sum(p.numel() for p in gan.netD.parameters()) == 212_865
    fast = GAN(GANConfig(preset="fast"))
    assert sum(p.numel() for p in fast.parameters()) < 0.2 * sum(p.numel() for p in gan.parameters())


def _reference_grads(gan: GAN, x: torch.Tensor, z: torch.Tensor) -> dict[str, torch.Tensor]:
    """The textbook two-pass step on copies: G's gradient from g_loss, then D's from d_loss with fake detached."""
    netG, netD = copy.deepcopy(gan.netG), copy.deepcopy(gan.netD)
    real = x * 2 - 1
    fake_out = netD(netG(z))
    F.binary_cross_entropy_with_logits(fake_out, torch.ones_like(fake_out)).backward()
    grads = {f"netG.{n}": p.grad.clone() for n, p in netG.named_parameters()}
    netD.zero_grad(set_to_none=True)
    real_out, fake_out = netD(real), netD(netG(z).detach())
    d_loss = (F.binary_cross_entropy_with_logits(real_out, torch.ones_like(real_out))
              + F.binary_cross_entropy_with_logits(fake_out, torch.zeros_like(fake_out)))
    d_loss.backward()
    grads.update({f"netD.{n}": p.grad.clone() for n, p in netD.named_parameters()})
    return grads


@pytest.mark.parametrize("preset", ["seed", "fast"])
def test_seed_step_gradients_equal_two_pass_reference(preset):
    torch.manual_seed(0)
    gan = GAN(GANConfig(preset=preset, dropout=0.0))  # no dropout: both computations see the same network
    gan.configure_training(lr=1e-4)
    x = _images(8)
    torch.manual_seed(1)
    z = torch.randn(8, 100)  # the draw train_step makes first after the same seed
    expected = _reference_grads(gan, x, z)
    before = {n: p.detach().clone() for n, p in gan.named_parameters()}
    torch.manual_seed(1)
    metrics = gan.train_step(x)  # leaves the gradients it used in .grad
    for name, p in gan.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-4, atol=1e-6, msg=lambda m: f"{name}: {m}")
        assert not torch.equal(p.detach(), before[name]), f"{name} was not updated"
    assert set(metrics) == {"loss", "d_loss", "g_loss", "d_real", "d_fake"}
    assert all(v.dim() == 0 and not v.requires_grad for v in metrics.values())
    torch.testing.assert_close(metrics["loss"], metrics["d_loss"] + metrics["g_loss"])
    assert 0 <= metrics["d_real"].item() <= 1 and 0 <= metrics["d_fake"].item() <= 1


def test_channels_last_computes_the_same_gradients():
    torch.manual_seed(0)
    plain = GAN(GANConfig(preset="fast", dropout=0.0))
    nhwc = GAN(GANConfig(preset="fast", dropout=0.0, channels_last=True))
    nhwc.load_state_dict(plain.state_dict())
    assert nhwc.netD.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    x, z = _images(4), torch.randn(4, 100)
    m_plain, m_nhwc = plain.compute_gradients(x, z), nhwc.compute_gradients(x, z)
    torch.testing.assert_close(m_nhwc, m_plain, rtol=1e-4, atol=1e-5)
    for (name, p), q in zip(plain.named_parameters(), nhwc.parameters()):
        torch.testing.assert_close(q.grad.contiguous(), p.grad, rtol=1e-4, atol=1e-6, msg=lambda m: f"{name}: {m}")


def test_keras_defaults():
    gan = GAN(GANConfig())
    gan.configure_training(lr=1e-4)
    bn = gan.netG.bn0
    assert (bn.eps, bn.momentum) == (1e-3, 0.01) and gan.netG.act.negative_slope == 0.3
    assert gan.netD.drop.p == 0.3 and gan.netD.conv1.bias.abs().sum() == 0  # Keras's zero bias initialiser
    opts = gan.optimizers()
    assert set(opts) == {"netG", "netD"}
    assert opts["netD"].defaults["betas"] == (0.9, 0.999) and opts["netD"].defaults["eps"] == 1e-7
    gan.set_lr(2e-4)
    assert all(g["lr"] == 2e-4 for o in opts.values() for g in o.param_groups)


def test_every_metric_has_a_label_and_an_explanation():
    assert GAN.metric_names[0] == "loss" and set(GAN.metric_labels) == set(GAN.metric_names)
    for text in GAN.metric_labels.values():
        label, explanation = text.split(": ", 1)  # "<label>: <one sentence>"
        assert label and explanation.endswith(".") and explanation.count(". ") == 0


@pytest.mark.parametrize("bad, field", [({"preset": "huge"}, "preset"), ({"noise_dim": 0}, "noise_dim"),
                                        ({"noise_dim": 1025}, "noise_dim"), ({"dropout": 1.0}, "dropout"),
                                        ({"leaky_slope": -0.1}, "leaky_slope"), ({"adam_beta1": 1.0}, "adam_beta1")])
def test_config_refuses_bad_values(bad, field):
    with pytest.raises(ValueError, match=field):
        GANConfig(**bad)


def test_sample_is_reproducible_and_decode_restores_the_mode():
    gan = GAN(GANConfig(preset="fast", noise_dim=16))
    assert gan.latent_dim == 16 and gan.sample_latent(3).shape == (3, 16)
    gan.train()
    a = gan.sample(5, generator=torch.Generator().manual_seed(3))
    assert gan.training and gan.netG.training and gan.netG.bn0.training
    b = gan.sample(5, generator=torch.Generator().manual_seed(3))
    assert a.shape == (5, 1, 28, 28) and a.min() >= 0 and a.max() <= 1 and not a.requires_grad
    torch.testing.assert_close(a, b)
    gan.eval()
    gan.decode(torch.randn(2, 16))
    assert not gan.netG.training
    p = gan.discriminate(a)
    assert p.shape == (5,) and ((p >= 0) & (p <= 1)).all()


def test_bf16_step_is_finite():
    torch.manual_seed(0)
    gan = GAN(GANConfig(preset="fast"))
    gan.configure_training(lr=1e-4, precision="bf16")
    for _ in range(3):
        metrics = gan.train_step(_images(16))
    assert all(math.isfinite(v.item()) for v in metrics.values())


def test_short_training_on_digits_lowers_d_loss(digits):
    torch.manual_seed(0)
    gan = GAN(GANConfig(preset="fast"))
    gan.configure_training(lr=1e-4)  # the seed's rate; d_loss falls by 0.3 to 0.6 within 100 steps over seeds
    g = torch.Generator().manual_seed(0)
    history = []
    while len(history) < 100:
        for xb in digits.batches(64, generator=g):
            history.append(gan.train_step(to_unit(xb)))
            if len(history) == 100:
                break
    d_loss = torch.stack([h["d_loss"] for h in history])
    assert torch.isfinite(d_loss).all()
    start, end = d_loss[:5].mean().item(), d_loss[-10:].mean().item()
    assert abs(start - 2 * math.log(2)) < 0.3  # D starts out guessing: 2 log 2 = 1.39
    assert end < start - 0.2
    d_real = torch.stack([h["d_real"] for h in history[-10:]]).mean()
    d_fake = torch.stack([h["d_fake"] for h in history[-10:]]).mean()
    assert d_real > d_fake  # D has learnt to tell the digits from the generator's output


@pytest.mark.parametrize("channels_last, dtype", [(False, torch.float32), (True, torch.float32),
                                                  (False, torch.bfloat16), (True, torch.bfloat16)])
def test_dropout_is_inverted_dropout_with_rate_p(channels_last, dtype):
    netD = GAN(GANConfig(preset="fast", dropout=0.3)).netD
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    h = (torch.rand(64, 16, 14, 14) + 0.5).to(dtype).contiguous(memory_format=memory_format).requires_grad_()
    torch.manual_seed(0)
    out = netD._dropout(h)
    assert out.dtype == dtype and out.is_contiguous(memory_format=memory_format)
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.01  # 200,704 units: P(keep) = 1 - p
    expected = (h.detach().float() / 0.7).to(dtype)  # kept units are scaled by 1 / (1 - p), in h's dtype
    torch.testing.assert_close(out.detach()[kept].float(), expected[kept].float(), rtol=1e-2, atol=0)
    out.sum().backward()  # the gradient is the scaled mask
    torch.testing.assert_close(h.grad.float(), kept.float() * torch.tensor(1 / 0.7, dtype=dtype).float())
    torch.manual_seed(0)
    assert torch.equal(netD._dropout(h), out)  # the torch seed makes it reproducible
    netD.eval()
    assert netD._dropout(h) is h  # no dropout at evaluation, and no draws
    netD.train()
    assert GAN(GANConfig(preset="fast", dropout=0.0)).netD._dropout(h) is h


def test_adam_is_fused_and_stays_fused_after_loading_an_unfused_state():
    import copy as _copy

    torch.manual_seed(0)
    gan = GAN(GANConfig(preset="fast"))
    gan.configure_training(lr=1e-4)
    assert all(g["fused"] for opt in gan.optimizers().values() for g in opt.param_groups)
    # an older checkpoint: unfused Adam state (step counters as CPU scalars, param groups with fused=None)
    gan.optG = torch.optim.Adam(gan.netG.parameters(), lr=1e-4, eps=1e-7)
    gan.optD = torch.optim.Adam(gan.netD.parameters(), lr=1e-4, eps=1e-7)
    gan.train_step(_images(8))
    state = _copy.deepcopy(gan.training_state())
    again = GAN(GANConfig(preset="fast"))
    again.load_state_dict(gan.state_dict())
    again.configure_training(lr=1e-4)
    again.load_training_state(state)
    for opt in again.optimizers().values():
        assert all(g["fused"] for g in opt.param_groups)
        assert all(s["step"].dtype == torch.float32 and s["step"].item() == 1 for s in opt.state.values())
    for model in (gan, again):
        torch.manual_seed(3)
        model.train_step(_images(8, seed=1))
    for p, q in zip(gan.parameters(), again.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)
